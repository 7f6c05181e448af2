"""Malformed configuration fails early with the culprit named."""

from __future__ import annotations

import pytest

from deepgen.model.config import ModelConfig, preset
from deepgen.train.config import StageConfig


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*\['full', 'tiny'\]"):
        preset("huge")


def test_unknown_model_key_names_its_path():
    with pytest.raises(ValueError, match=r"config model\.dit: unknown key\(s\) \['num_blocks'\]"):
        preset("tiny", {"dit": {"num_blocks": 3}})


def test_overrides_merge_into_the_preset():
    cfg = preset("tiny", {"dit": {"num_layers": 2}})
    assert cfg.dit.num_layers == 2 and cfg.dit.attention_head_dim == preset("tiny").dit.attention_head_dim
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_stage_errors_name_the_stage_and_key():
    with pytest.raises(ValueError, match=r"stage 'sft': unknown key\(s\) \['stepz'\]"):
        StageConfig.from_dict("sft", {"stepz": 3})
    with pytest.raises(ValueError, match="objective must be one of"):
        StageConfig.from_dict("sft", {"objective": "gan"})
    with pytest.raises(ValueError, match=r"stage 'sft': `precision` is now `parallel: \{param_dtype"):
        StageConfig.from_dict("sft", {"precision": "bf16"})


def test_parallel_block_is_typed_and_checked():
    stage = StageConfig.from_dict("sft", {"parallel": {"strategy": "fsdp2", "param_dtype": "bf16",
                                                       "frozen_dtype": "bf16", "grad_accumulation": 4}})
    assert stage.parallel.strategy == "fsdp2" and stage.parallel.grad_accumulation == 4
    assert StageConfig.from_dict("sft", {}).parallel.strategy == "ddp"  # the tiny CPU default
    bad = [({"strategy": "fsdp"}, r"parallel\.strategy must be one of \('ddp', 'fsdp2'\)"),
           ({"param_dtype": "fp8"}, r"parallel\.param_dtype must be one of"),
           ({"frozen_dtype": "bf16"}, "frozen_dtype bf16 needs param_dtype bf16"),
           ({"grad_accumulation": 0}, r"grad_accumulation must be a whole number >= 1"),
           ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
           ({"shards": 2}, r"stage 'sft': parallel: unknown key\(s\) \['shards'\]")]
    for block, message in bad:
        with pytest.raises(ValueError, match=message):
            StageConfig.from_dict("sft", {"parallel": block})
