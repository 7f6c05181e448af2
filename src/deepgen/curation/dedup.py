"""Deduplication indexes over 64-bit hashes, both streaming (query a batch, then add the kept part of it) and linear in
practice: no all-pairs comparison, and ~30 bytes per kept sample, in numpy arrays.

* `ExactIndex`: content hashes (sha256 of the decoded pixels, 64 bits kept), looked up exactly.
* `NearIndex`: perceptual hashes within a Hamming distance `threshold`, by multi-index hashing: the 64 bits are cut
  into m chunks, and two hashes within distance k agree within floor(k/m) bits on at least one chunk (pigeonhole), so
  only stored hashes found by probing each chunk's value and its few neighbours are compared bit by bit. With
  m = 3 (21-22 bit chunks) and k = 4, a query probes 69 chunk values; a bucket holds N/2^21 hashes on average, so the
  work per query stays near-constant up to millions of samples.

Both keep their entries in sorted runs (a log-structured merge: each added batch is a run, runs of similar size are
merged), so adding is O(log N) amortised per hash and a query is a binary search per run.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

_POPCOUNT = np.bitwise_count if hasattr(np, "bitwise_count") else None


def popcount(x: np.ndarray) -> np.ndarray:
    if _POPCOUNT is not None:
        return _POPCOUNT(x)
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


class _Grow:
    """A growable 1-D numpy array (capacity doubles: appending is amortised O(1) per element)."""

    def __init__(self, dtype):
        self.data = np.empty(1024, dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            grown = np.empty(max(need, 2 * len(self.data)), self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = values
        self.n = need

    def view(self) -> np.ndarray:
        return self.data[: self.n]


class _Chains:
    """A multimap from small integer keys (at most `width` bits) to ids, as hash chains in numpy arrays: `head[key]` is
    the newest id with that key, `next[id]` the one before it. Adding a batch and looking a batch up are a few vector
    operations plus one pass per chain link, so the cost per hash stays constant while buckets stay small (a bucket
    holds N / 2^width ids on average). 4 bytes per id, plus the head table."""

    def __init__(self, width: int):
        self.head = np.full(1 << width, -1, np.int32)
        self.next = _Grow(np.int32)

    def __len__(self) -> int:
        return self.next.n

    def add(self, keys: np.ndarray) -> None:
        """Add ids len(self) .. len(self)+len(keys)-1 under `keys`."""
        keys = np.asarray(keys).astype(np.int64)
        base = len(self)
        order = np.argsort(keys, kind="stable")
        sk, sid = keys[order], (order + base).astype(np.int32)
        first = np.ones(len(sk), bool)
        first[1:] = sk[1:] != sk[:-1]
        last = np.ones(len(sk), bool)
        last[:-1] = first[1:]
        nxt = np.empty(len(sk), np.int32)
        nxt[first] = self.head[sk[first]]
        nxt[~first] = sid[:-1][~first[1:]]
        self.next.extend(np.empty(len(sk), np.int32))
        self.next.data[sid] = nxt
        self.head[sk[last]] = sid[last]

    def find(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (query position, id) whose key equals the query's."""
        cur = self.head[np.asarray(queries).astype(np.int64)]
        pos = np.nonzero(cur >= 0)[0]
        cur = cur[pos]
        qs, ids = [], []
        nxt = self.next.view()
        while len(pos):
            qs.append(pos)
            ids.append(cur)
            cur = nxt[cur]
            alive = cur >= 0
            pos, cur = pos[alive], cur[alive]
        if not qs:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(qs).astype(np.int64), np.concatenate(ids).astype(np.int64)


class ExactIndex:
    """Kept content hashes, looked up exactly (chains keyed by the low 20 bits, verified on all 64)."""

    WIDTH = 20

    def __init__(self):
        self._chains = _Chains(self.WIDTH)
        self._hashes = _Grow(np.uint64)

    def __len__(self) -> int:
        return self._hashes.n

    def query_and_add(self, hashes: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
        """Per hash: True when it repeats a kept hash or an earlier eligible hash of the batch. The eligible hashes
        that repeat nothing are kept (added). Ineligible ones are neither checked nor kept (False)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        eligible = np.ones(len(hashes), bool) if eligible is None else np.asarray(eligible, bool)
        dup = np.zeros(len(hashes), bool)
        q, ids = self._chains.find(hashes & np.uint64((1 << self.WIDTH) - 1))
        dup[q[self._hashes.view()[ids] == hashes[q]]] = True
        seen: set[int] = set()
        for i in np.nonzero(eligible & ~dup)[0].tolist():
            h = int(hashes[i])
            if h in seen:
                dup[i] = True
            seen.add(h)
        dup &= eligible
        self.add(hashes[eligible & ~dup])
        return dup

    def add(self, hashes: np.ndarray) -> None:
        hashes = np.asarray(hashes, dtype=np.uint64)
        self._chains.add(hashes & np.uint64((1 << self.WIDTH) - 1))
        self._hashes.extend(hashes)


class NearIndex:
    """Kept perceptual hashes (and, for edits, the reference image's hash: both must be near for a match)."""

    BATCH = 2048  # larger batches are split (the within-batch check is all-pairs)

    def __init__(self, threshold: int = 4, chunks: int | None = None):
        if not 0 <= threshold < 32:
            raise ValueError(f"near-duplicate threshold must be in [0, 32), got {threshold}")
        self.threshold = threshold
        m = chunks or (3 if threshold < 9 else 4)
        self.radius = threshold // m
        bounds = np.linspace(0, 64, m + 1).round().astype(int)
        self._chunks = [(int(lo), int(hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._masks = []
        for _, width in self._chunks:
            masks = [0] + [sum(1 << b for b in bits) for r in range(1, self.radius + 1)
                           for bits in combinations(range(width), r)]
            self._masks.append(np.array(masks, dtype=np.uint64))
        self._tables = [_Chains(width) for _, width in self._chunks]
        self._hashes, self._aux, self._has_aux = _Grow(np.uint64), _Grow(np.uint64), _Grow(bool)

    def __len__(self) -> int:
        return self._hashes.n

    def _chunk(self, hashes: np.ndarray, c: int) -> np.ndarray:
        lo, width = self._chunks[c]
        return (hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)

    def _candidates(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query position, id) pairs that agree within `radius` bits on some chunk (a pair may repeat)."""
        qs, ids = [], []
        for c, masks in enumerate(self._masks):
            probes = (self._chunk(hashes, c)[:, None] ^ masks[None, :]).ravel()
            q, i = self._tables[c].find(probes)
            qs.append(q // len(masks))
            ids.append(i)
        return np.concatenate(qs), np.concatenate(ids)

    def _close(self, h1, a1, x1, h2, a2, x2) -> np.ndarray:
        ok = popcount(h1 ^ h2) <= self.threshold
        ok &= x1 == x2  # an edit never matches a plain image
        return ok & (~x1 | (popcount(a1 ^ a2) <= self.threshold))

    def query_and_add(self, hashes: np.ndarray, aux: np.ndarray | None = None, has_aux: np.ndarray | None = None,
                      eligible: np.ndarray | None = None) -> np.ndarray:
        """Per hash: True when it is within `threshold` bits of a kept hash or of an earlier kept hash of the batch
        (for edits, the reference hashes must be within it too). Eligible hashes that repeat nothing are kept, in
        order, as in a sequential scan; ineligible ones are neither checked nor kept (False)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        n = len(hashes)
        aux = np.zeros(n, np.uint64) if aux is None else np.asarray(aux, np.uint64)
        has_aux = np.zeros(n, bool) if has_aux is None else np.asarray(has_aux, bool)
        eligible = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
        if n > self.BATCH:
            return np.concatenate([self.query_and_add(hashes[i : i + self.BATCH], aux[i : i + self.BATCH],
                                                      has_aux[i : i + self.BATCH], eligible[i : i + self.BATCH])
                                   for i in range(0, n, self.BATCH)])
        dup = np.zeros(n, bool)
        q, ids = self._candidates(hashes)  # against what is already kept
        if len(q):
            H, A, X = self._hashes.view(), self._aux.view(), self._has_aux.view()
            ok = self._close(hashes[q], aux[q], has_aux[q], H[ids], A[ids], X[ids])
            dup[q[ok]] = True
        # within the batch, in order (only kept hashes count, so the first of two near-copies stays): all pairs of
        # the batch at once (batches are small), then a sequential pass over the few hashes with an earlier match
        cand = eligible & ~dup
        kept = cand.copy()
        idx = np.nonzero(cand)[0]
        if len(idx) > 1:
            close = self._close(hashes[idx][:, None], aux[idx][:, None], has_aux[idx][:, None],
                                hashes[idx][None, :], aux[idx][None, :], has_aux[idx][None, :])
            close &= np.tri(len(idx), k=-1, dtype=bool)  # (later, earlier) pairs only
            for r in np.nonzero(close.any(axis=1))[0].tolist():
                if kept[idx[np.nonzero(close[r])[0]]].any():
                    kept[idx[r]] = False
                    dup[idx[r]] = True
        dup &= eligible
        self.add(hashes[kept], aux[kept], has_aux[kept])
        return dup

    def add(self, hashes: np.ndarray, aux: np.ndarray | None = None, has_aux: np.ndarray | None = None) -> None:
        """Add hashes without checking them (also how a resumed run restores its index)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        n = len(hashes)
        for c in range(len(self._chunks)):
            self._tables[c].add(self._chunk(hashes, c))
        self._hashes.extend(hashes)
        self._aux.extend(np.zeros(n, np.uint64) if aux is None else np.asarray(aux, np.uint64))
        self._has_aux.extend(np.zeros(n, bool) if has_aux is None else np.asarray(has_aux, bool))
