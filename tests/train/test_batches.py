"""The training stream: the stage's data mix (`keep`, by category or dataset), each rank's own share of an epoch,
batches of one image size, every reference of an edit, and a saved position that continues the same batches."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from PIL import Image

from deepgen.data.shards import encode_sample, png_bytes, tar_bytes
from deepgen.train.batches import collate, samples_batch, training_batches

ONLY_SINGLE = {"single_object": 1.0, "*": 0.0}


def keys_of(batch: dict) -> list[str]:
    return [s["key"] for s in batch["samples"]]


def test_keep_selects_categories(small_shards):
    record, _, _ = small_shards
    stream = training_batches(record["train_urls"], 8, seed=0, keep=ONLY_SINGLE, collate_fn=samples_batch)
    categories = {s["category"] for batch in itertools.islice(stream, 10) for s in batch["samples"]}
    assert categories == {"single_object"}
    mixed = training_batches(record["train_urls"], 8, seed=0, collate_fn=samples_batch)
    assert len({s["category"] for batch in itertools.islice(mixed, 10) for s in batch["samples"]}) > 3


@pytest.mark.timeout(120)  # without the guard the stream cycles through epochs forever
def test_keep_matching_nothing_is_an_error_naming_the_mix(small_shards):
    record, _, _ = small_shards
    stream = training_batches(record["train_urls"], 4, seed=0, keep={"no_such_category": 1.0, "*": 0.0},
                              give_up_after=500)
    with pytest.raises(ValueError, match="no_such_category"):
        next(stream)


def epoch_keys(urls, rank, world_size, loader_workers=0) -> list[str]:
    """The samples one rank draws in its first epoch (batch size 1: nothing waits in a bucket)."""
    stream = training_batches(urls, 1, seed=5, rank=rank, world_size=world_size, loader_workers=loader_workers,
                              collate_fn=samples_batch)
    keys = []
    while len(stream.slot_states) < max(1, loader_workers) or min(s["epoch"] for s in stream.slot_states.values()) < 1:
        before = dict(stream.slot_states)
        batch = next(stream)
        slot = next(k for k, state in stream.slot_states.items() if before.get(k) is not state)
        if stream.slot_states[slot]["epoch"] == 0:
            keys += keys_of(batch)
    return keys


@pytest.mark.parametrize("loader_workers", [0, 4], ids=["split-by-shard", "split-by-sample"])
def test_two_ranks_share_an_epoch_without_overlap(small_shards, loader_workers):
    """2 ranks x 1 slot split the shards by shard; 2 ranks x 4 loader workers (8 slots, more than shards) by
    sample."""
    from deepgen.data.shards import read_samples

    record, _, _ = small_shards
    urls = record["train_urls"]
    assert 2 <= len(urls) < 8
    everything = {s["key"] for s in read_samples(urls)}
    ranks = [epoch_keys(urls, rank, 2, loader_workers) for rank in range(2)]
    assert all(len(keys) == len(set(keys)) for keys in ranks)  # no sample twice within a rank's epoch either
    assert not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) == everything
    if loader_workers:  # split by sample: shares within one sample per slot
        assert abs(len(ranks[0]) - len(ranks[1])) <= loader_workers * len(urls)


def test_a_rank_without_samples_is_an_error(tmp_path):
    """Two samples for four ranks: ranks 2 and 3 would wait forever for a batch."""
    url = tmp_path / "tiny.tar"
    url.write_bytes(tar_bytes([encode_sample({"key": f"k{i}", "image": Image.new("RGB", (8, 8)), "caption": "x"})
                               for i in range(2)]))
    assert next(training_batches([str(url)], 1, seed=0, rank=1, world_size=4))["images"].shape[0] == 1
    with pytest.raises(ValueError, match="slot 3 of 4 got no samples"):
        next(training_batches([str(url)], 1, seed=0, rank=3, world_size=4))


def test_epochs_are_permuted_differently(small_shards):
    record, _, _ = small_shards
    count = record["counts"]["train"]
    stream = training_batches(record["train_urls"], 1, seed=0, collate_fn=samples_batch)
    first = [keys_of(b)[0] for b in itertools.islice(stream, count)]
    second = [keys_of(b)[0] for b in itertools.islice(stream, count)]
    assert sorted(first) == sorted(second) and first != second


def saved(state: dict) -> dict:
    """A state as a checkpoint gives it back (torch.save, then loaded with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("loader_workers", [0, 2])
def test_a_stream_continues_from_its_saved_state(mixed_shards, loader_workers):
    """Resumed after 7 batches, a stream hands out the very batches (same samples, same tensors) that the stream
    it was saved from does next: across bucket waits, the keep draw, epoch ends and the loader workers' turns."""
    keep = {"dataset:gamma": 0.5, "*": 1.0}
    stream = training_batches(mixed_shards, 4, seed=1, keep=keep, world_size=2, rank=1,
                              loader_workers=loader_workers)
    for _ in range(7):
        next(stream)
    state = saved(stream.state_dict())
    assert any(s["pending"] for s in state["slots"].values())  # samples were waiting in a bucket
    ahead = [next(stream) for _ in range(12)]
    resumed = training_batches(mixed_shards, 4, seed=1, keep=keep, world_size=2, rank=1,
                               loader_workers=loader_workers, state=state)
    again = [next(resumed) for _ in range(12)]
    assert [b["captions"] for b in again] == [b["captions"] for b in ahead]
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(ahead, again))
    assert max(s["epoch"] for s in resumed.state_dict()["slots"].values()) >= 1  # it crossed an epoch end


def test_a_batch_holds_one_image_size(mixed_shards):
    stream = training_batches(mixed_shards, 4, seed=0)
    sizes = [tuple(next(stream)["images"].shape[-2:]) for _ in range(30)]
    assert set(sizes) == {(64, 64), (48, 96), (96, 48)} == stream.sizes


def test_keep_mixes_by_dataset(mixed_shards):
    stream = training_batches(mixed_shards, 4, seed=0, keep={"dataset:gamma": 0.0, "*": 1.0},
                              collate_fn=samples_batch)
    datasets = {s["dataset"] for batch in itertools.islice(stream, 20) for s in batch["samples"]}
    assert datasets == {"alpha", "beta"}


def test_collate_keeps_every_reference():
    image = Image.new("RGB", (16, 16), (255, 0, 0))
    refs = [Image.new("RGB", (16, 16), (0, 255, 0)), Image.new("RGB", (8, 16), (0, 0, 255))]
    batch = collate([{"image": image, "caption": "a", "source_images": refs, "kind": "edit"},
                     {"image": image, "caption": "b", "source_images": [], "kind": "t2i"}])
    assert [len(r) for r in batch["refs"]] == [2, 0]
    assert [[tuple(t.shape) for t in r] for r in batch["ref_images"]] == [[(3, 16, 16), (3, 16, 8)], []]
    assert batch["ref_images"][0][1][2].max() == 1.0  # the second reference is its own image (blue)


def test_an_edit_with_two_references_trains_a_step(tmp_path):
    """Both references reach the model (the loss depends on the second), and a step on them updates the DiT."""
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen
    from deepgen.train.config import StageConfig
    from deepgen.train.freeze import apply_schedule
    from deepgen.train.objectives import ObjectiveContext, build_objective

    url = tmp_path / "edits.tar"
    url.write_bytes(tar_bytes([edit_record(i) for i in range(4)]))
    stage = StageConfig.from_dict("sft", {"objective": "flow", "trainable": ["dit"], "batch_size": 2})
    torch.manual_seed(0)
    model = DeepGen(preset("tiny"))
    apply_schedule(model, stage)
    objective = build_objective(model, stage, ObjectiveContext(data={"train": [str(url)]}, seed=0))
    batch = next(objective.batches())
    assert [len(r) for r in batch["refs"]] == [2, 2]
    other = [[r[0], -r[1]] for r in batch["ref_images"]]
    losses = [model.flow_loss(batch["images"], batch["captions"], batch["refs"], refs,
                              generator=torch.Generator().manual_seed(0)) for refs in (batch["ref_images"], other)]
    assert not torch.allclose(losses[0], losses[1])
    before = [p.detach().clone() for p in model.dit.parameters()]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss, _ = objective(batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.dit.parameters()))


def edit_record(i: int) -> dict:
    colour = lambda seed: tuple((seed * 97 + k * 53) % 256 for k in range(3))  # noqa: E731
    record = encode_sample({"key": f"edit{i:03d}", "image": Image.new("RGB", (64, 64), colour(i)),
                            "source_image": Image.new("RGB", (64, 64), colour(i + 1)),
                            "caption": f"blend the two pictures {i}", "kind": "edit", "category": "edit_blend"})
    record["src1.png"] = png_bytes(Image.new("RGB", (48, 64), colour(i + 2)))
    return record


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory) -> list[str]:
    """4 shards of 3 image sizes and 3 datasets (by the json's `dataset`), 36 samples each."""
    folder = tmp_path_factory.mktemp("mixed")
    sizes = [(64, 64), (96, 48), (48, 96)]  # (width, height)
    urls = []
    for shard in range(4):
        records = []
        for i in range(36):
            n = shard * 36 + i
            width, height = sizes[n % 3] if n % 5 else sizes[0]
            sample = {"key": f"s{n:04d}", "image": Image.new("RGB", (width, height), (n % 256, 0, 0)),
                      "caption": f"sample {n}", "kind": "t2i", "category": "general",
                      "dataset": ("alpha", "beta", "gamma")[n % 3 if n % 7 else 2]}
            records.append(encode_sample(sample))
        path = folder / f"train-{shard:05d}.tar"
        path.write_bytes(tar_bytes(records))
        urls.append(str(path))
    return urls
