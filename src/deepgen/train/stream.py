"""The training stream: each rank's own share of the shards, epoch after epoch, in batches of one image size, and a
position small enough to save with every checkpoint, so that a resumed run continues with the very same batches.

Split. Epoch e orders the shards by a permutation of (seed, e), the same on every rank. The stream has S slots, one
per rank and DataLoader worker (world size x max(1, loader workers)); slot s takes shards s, s + S, ... of that order
(webdataset's node and worker split) or, with fewer shards than slots, samples s, s + S, ... of every shard's own
(seed, e, shard) permutation. So no sample is drawn twice in an epoch across ranks, and the sequence is fixed by the
seed, the world size and the number of loader workers. A slot reads `open_shards` of its shards at a time, whole (a
shard is at most curation's shard_max_bytes), each in its permuted order, and draws from them in a random interleave,
so one batch mixes shards. Ranks step in lockstep but their shares may differ by a shard: their epochs end apart.

Mix. `keep` maps a sample's category, `dataset:<name>` (the name in its json's `dataset` or else `source` field), its
kind, or "*" (looked up in that order; default 1) to the probability that the sample is used in an epoch: a stage's
data mix without re-curating. The draw is a hash of (seed, epoch, shard, key), so it has no state; the decision is
made on the json, before any image is decoded. A `keep` that matches nothing is an error after `give_up_after`
rejections in a row rather than a silent hang.

Buckets. A sample waits in the bucket of its target image's (height, width) (read from the PNG header) until
`batch_size` samples of that size are there: a batch holds one size (curation's fix_pixels resize keeps aspect
ratios, with sides a multiple of its `multiple`). Waiting samples carry over into the next epoch.

Position. After each batch a slot's state is: epoch, next shard of its list, the open shards and how far each was
read, the interleave's draw count and the waiting samples as (shard, key). Each batch carries its slot's state and
`BatchStream` keeps the state of the last batch it handed out per slot (prefetching workers run ahead; that does not
move it). A stream built from that state re-reads the open shards and those holding waiting samples and continues
with the same batches. Decoding and collation run in the slot, so with loader workers they run in the workers.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from deepgen.data.shards import decode_record, png_size, shard_records


def _hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def uniform(*parts) -> float:
    """A draw in [0, 1) that is a pure function of its arguments: nothing to save for a resume."""
    return (_hash(*parts) >> 11) / 2**53


def permutation(n: int, *parts) -> list[int]:
    order = list(range(n))
    random.Random(_hash(*parts)).shuffle(order)
    return order


@dataclass(frozen=True)
class StreamSpec:
    """Everything that fixes a rank's sequence of batches."""

    urls: tuple[str, ...]
    seed: int
    batch_size: int
    rank: int = 0
    world_size: int = 1
    loader_workers: int = 0  # DataLoader worker processes per rank; 0: the slot runs in the training process
    keep: dict[str, float] | None = None
    open_shards: int = 4  # shards a slot reads and interleaves at once (memory: this many whole shards)
    give_up_after: int = 10_000

    @property
    def slots_per_rank(self) -> int:
        return max(1, self.loader_workers)

    @property
    def slots(self) -> int:
        return self.world_size * self.slots_per_rank

    def parts(self, epoch: int, slot: int) -> list[tuple[int, int, int]]:
        """Slot `slot`'s share of epoch `epoch`: (shard index, stride, offset) per shard it reads, in order."""
        n, slots = len(self.urls), self.slots
        order = permutation(n, self.seed, epoch)
        if n >= slots:
            return [(u, 1, 0) for u in order[slot::slots]]
        return [(u, slots, slot) for u in order]

    def probability(self, meta: dict) -> float:
        keep = self.keep or {}
        dataset = meta.get("dataset", meta.get("source"))
        for name in (meta.get("category"), f"dataset:{dataset}" if dataset is not None else None, meta.get("kind"),
                     "*"):
            if name is not None and name in keep:
                return float(keep[name])
        return 1.0


def bucket_of(record: dict) -> tuple[int, int] | None:
    """The (height, width) a sample's target image has; None for prompt-only samples."""
    return png_size(record["png"]) if record.get("png") is not None else None


class SlotStream:
    """One slot's batches of undecoded records, each with the slot's state after it (see the module docstring)."""

    def __init__(self, spec: StreamSpec, slot: int, state: dict | None = None):
        self.spec, self.slot = spec, slot
        self.epoch, self.next_part, self.draws = 0, 0, 0
        self.open: list[list] = []  # [part index, position, records]
        self.pending: dict[tuple | None, list[dict]] = {}
        self._parts_epoch, self._parts = -1, []
        self.rejected = 0
        if state:
            self._restore(state)

    def state(self) -> dict:
        return {"epoch": self.epoch, "next_part": self.next_part, "draws": self.draws,
                "open": [[index, position] for index, position, _ in self.open],
                "pending": [[r["__shard__"], r["__key__"]] for bucket in self.pending.values() for r in bucket]}

    def _restore(self, state: dict) -> None:
        self.epoch, self.next_part, self.draws = int(state["epoch"]), int(state["next_part"]), int(state["draws"])
        parts = self.parts()
        self.open = [[int(i), int(position), self._read(parts[int(i)])] for i, position in state["open"]]
        wanted: dict[int, set[str]] = {}
        for shard, key in state["pending"]:
            wanted.setdefault(int(shard), set()).add(key)
        found = {}
        for shard, keys in wanted.items():
            found.update({(shard, r["__key__"]): r for r in self._shard(shard) if r["__key__"] in keys})
        for shard, key in state["pending"]:
            if (int(shard), key) not in found:
                raise ValueError(f"resuming the data stream: sample {key!r} is no longer in {self.spec.urls[shard]}")
            record = found[(int(shard), key)]
            self.pending.setdefault(bucket_of(record), []).append(record)

    def parts(self) -> list[tuple[int, int, int]]:
        if self._parts_epoch != self.epoch:
            self._parts_epoch, self._parts = self.epoch, self.spec.parts(self.epoch, self.slot)
        return self._parts

    def _shard(self, index: int) -> list[dict]:
        records = list(shard_records(self.spec.urls[index]))
        for record in records:
            record["__shard__"] = index
        return records

    def _read(self, part: tuple[int, int, int]) -> list[dict]:
        index, stride, offset = part
        records = self._shard(index)
        return [records[i] for i in permutation(len(records), self.spec.seed, self.epoch, index)[offset::stride]]

    def _draw(self) -> dict | None:
        """The next record of this slot's epoch, or None when the epoch is over (the next one then begins)."""
        parts = self.parts()
        while len(self.open) < self.spec.open_shards and self.next_part < len(parts):
            self.open.append([self.next_part, 0, self._read(parts[self.next_part])])
            self.next_part += 1
            self.open = [o for o in self.open if o[1] < len(o[2])]
        if not self.open:
            self.epoch, self.next_part, self.draws = self.epoch + 1, 0, 0
            return None
        remaining = [len(records) - position for _, position, records in self.open]
        # weighted by what is left: every interleaving of the open shards' orders is equally likely
        target = uniform(self.spec.seed, self.epoch, self.slot, self.draws) * sum(remaining)
        self.draws += 1
        pick = 0
        while target >= remaining[pick]:
            target -= remaining[pick]
            pick += 1
        opened = self.open[pick]
        record = opened[2][opened[1]]
        opened[1] += 1
        if opened[1] == len(opened[2]):
            del self.open[pick]
        return record

    def _kept(self, record: dict) -> bool:
        if not self.spec.keep:
            return True
        p = self.spec.probability(json.loads(record["json"]) if record.get("json") else {})
        if p >= 1.0 or (p > 0.0 and uniform(self.spec.seed, self.epoch, record["__shard__"], record["__key__"]) < p):
            self.rejected = 0
            return True
        self.rejected += 1
        if self.rejected >= self.spec.give_up_after:
            urls = self.spec.urls
            raise ValueError(f"the stage's keep={self.spec.keep} rejected {self.rejected} samples in a row from "
                             f"{urls[0]} and {len(urls) - 1} more shards: no category, dataset or kind it keeps is "
                             f"in the data")
        return False

    def __iter__(self) -> Iterator[tuple[list[dict], dict]]:
        drawn, empty_epochs = 0, 0
        while True:
            record = self._draw()
            if record is None:  # an epoch ended
                empty_epochs = 0 if drawn else empty_epochs + 1
                if empty_epochs >= 8:  # not one unlucky empty shard: this slot gets nothing
                    raise ValueError(f"data stream slot {self.slot} of {self.spec.slots} got no samples in "
                                     f"{empty_epochs} epochs from {len(self.spec.urls)} shard(s) starting "
                                     f"{self.spec.urls[0]}: fewer samples than ranks x loader workers?")
                drawn = 0
                continue
            drawn += 1
            if not self._kept(record):
                continue
            key = bucket_of(record)
            bucket = self.pending.setdefault(key, [])
            bucket.append(record)
            if len(bucket) == self.spec.batch_size:
                del self.pending[key]
                yield bucket, self.state()


def slot_batches(spec: StreamSpec, local: int, state: dict | None, collate: Callable[[list[dict]], dict]):
    """Slot `local` of this rank as collated batches, each tagged with its slot and the slot's state after it."""
    for records, after in SlotStream(spec, spec.rank * spec.slots_per_rank + local, state):
        batch = collate([decode_record(r) for r in records])
        batch["stream_slot"], batch["stream_state"] = local, after
        yield batch


class _Slots(torch.utils.data.IterableDataset):
    """The rank's slots in DataLoader workers. The loader takes batches from its workers in turn, starting with worker
    0; worker i plays slot (i + first) % workers so that a resumed stream continues the turn where it stopped."""

    def __init__(self, spec: StreamSpec, first: int, states: dict[int, dict], collate):
        self.spec, self.first, self.states, self.collate = spec, first, states, collate

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        local = (info.id + self.first) % info.num_workers
        return slot_batches(self.spec, local, self.states.get(local), self.collate)


class BatchStream:
    """One rank's batches (an endless iterator) with `state_dict()` / a `state` to continue from.

    `sizes` collects the (height, width) of every batch's `images` handed out (saved with the state too)."""

    def __init__(self, spec: StreamSpec, collate: Callable[[list[dict]], dict], state: dict | None = None):
        if not spec.urls:
            raise ValueError("no training shards given")
        self.spec, self.collate = spec, collate
        state = state or {}
        if state and (int(state["world_size"]), int(state["loader_workers"])) != (spec.world_size,
                                                                                    spec.loader_workers):
            raise ValueError(f"resuming the data stream: it was saved with world size {state['world_size']} and "
                             f"{state['loader_workers']} loader workers, this run has {spec.world_size} and "
                             f"{spec.loader_workers}")
        self.consumed = int(state.get("consumed", 0))
        self.slot_states = {int(k): v for k, v in state.get("slots", {}).items()}
        self.sizes = {tuple(int(x) for x in size) for size in state.get("sizes", [])}
        self._batches = None

    def state_dict(self) -> dict:
        return {"world_size": self.spec.world_size, "loader_workers": self.spec.loader_workers,
                "consumed": self.consumed, "slots": dict(self.slot_states), "sizes": sorted(self.sizes)}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._batches is None:
            self._batches = self._start()
        batch = next(self._batches)
        self.slot_states[int(batch.pop("stream_slot"))] = batch.pop("stream_state")
        self.consumed += 1
        if isinstance(batch.get("images"), torch.Tensor):
            self.sizes.add(tuple(batch["images"].shape[-2:]))
        return batch

    def _start(self):
        workers = self.spec.loader_workers
        if workers == 0:
            return slot_batches(self.spec, 0, self.slot_states.get(0), self.collate)
        loader = torch.utils.data.DataLoader(
            _Slots(self.spec, self.consumed % workers, self.slot_states, self.collate), batch_size=None,
            num_workers=workers, pin_memory=torch.cuda.is_available(), prefetch_factor=2,
            # its own generator: the loader must not draw from the global one the training noise comes from
            generator=torch.Generator().manual_seed(self.spec.seed))
        return iter(loader)
