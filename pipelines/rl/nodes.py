"""RL prompts as data: training-split prompts written as a prompt file, curated by the `prompts` source into shards
with their own data version (contamination check on)."""

from __future__ import annotations

from deepgen import storage as store
from deepgen.curation.curate import CurationParams, curate
from deepgen.data.shards import read_samples
from deepgen.rl.prompts import prompt_lines, write_prompt_file


def curate_rl_prompts(curation: dict, rl_prompts: dict, storage: dict) -> dict:
    lines = prompt_lines(read_samples(curation["train_urls"]), rl_prompts["categories"],
                         rl_prompts["heldout_fraction"])
    uri = write_prompt_file(lines, store.join(storage["shards"], "rl_prompt_files"))
    params = CurationParams.from_dict({**rl_prompts["curation"], "source": {"type": "prompts", "uri": uri}})
    return curate(params, storage["shards"])
