"""Stage 3, MR-GRPO: the algorithm (grpo), its settings (config), the prompt set (prompts) and the rewards, each a
plug-in behind one interface (rewards)."""
