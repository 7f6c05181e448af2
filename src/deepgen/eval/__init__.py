"""Evaluation: generate for held-out prompts and edits, score against their scene specs, aggregate per category."""
