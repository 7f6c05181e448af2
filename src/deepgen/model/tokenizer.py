"""Tokenizer and prompt template (the paper's Qwen chat template, left padding).

The full preset loads Qwen2.5-VL's own tokenizer from its folder. The tiny preset cannot download one, so it trains a
small byte-level BPE offline on a fixed corpus: deterministic, saved beside every checkpoint, loaded back offline.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]
T2I_TEMPLATE = "<|im_start|>user\nGenerate an image: {caption}<|im_end|>\n<|im_start|>assistant\n"
EDIT_TEMPLATE = "<|im_start|>user\n{images}{instruction}<|im_end|>\n<|im_start|>assistant\n"
IMAGE_SLOT = "<|vision_start|>{pads}<|vision_end|>\n"  # one reference; several share one "\n" (as the release)

# Words of the tiny world and of everyday prompts; byte-level BPE still encodes any text, these just merge well.
_CORPUS_WORDS = (
    "a an the of and in at on to with as many is has two three four one five red orange yellow green blue purple "
    "white black gray grey light dark circle circles square squares triangle triangles shape shapes object "
    "top bottom left right center middle above below next photo image picture of colour color background "
    "make move remove add replace change turn into put write word text written letters ripe banana grass sky "
    "tomato grape lemon leaf ocean fire snow night sun strawberry corners sides wheels legs generate "
    "user assistant system edit instruction scene small large big the"
)


def build_tiny_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE with the Qwen special tokens; same vocabulary on every machine."""
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = _CORPUS_WORDS.split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] + [T2I_TEMPLATE, EDIT_TEMPLATE]
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a saved tokenizer (ours or Qwen's) from a local folder, offline, with the paper's left padding."""
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def t2i_prompt(caption: str) -> str:
    return T2I_TEMPLATE.format(caption=caption)


def edit_prompt(instruction: str, image_tokens: list[int]) -> str:
    """One vision slot per reference image, each holding its (post-merge) number of `<|image_pad|>` tokens; the
    slots follow each other and one newline separates them from the instruction, as in the release."""
    slots = "".join(IMAGE_SLOT.format(pads="<|image_pad|>" * n).rstrip("\n") for n in image_tokens)
    return EDIT_TEMPLATE.format(images=slots + "\n", instruction=instruction)
