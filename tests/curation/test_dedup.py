"""Dedup indexes: the same decisions as a sequential all-pairs scan, at a cost that grows linearly."""

from __future__ import annotations

import time

import numpy as np
import pytest

from deepgen.curation.dedup import ExactIndex, NearIndex


def sequential_scan(hashes, k, aux=None):
    kept, dup = [], []
    for i, h in enumerate(hashes):
        d = any(bin(int(h) ^ int(hashes[j])).count("1") <= k and
                (aux is None or bin(int(aux[i]) ^ int(aux[j])).count("1") <= k) for j in kept)
        dup.append(d)
        if not d:
            kept.append(i)
    return np.array(dup)


def clustered_hashes(n, clusters, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, clusters, dtype=np.uint64)
    out = []
    for _ in range(n):
        h = int(base[rng.integers(clusters)])
        for bit in rng.choice(64, rng.integers(0, 8), replace=False):
            h ^= 1 << int(bit)
        out.append(h)
    return np.array(out, dtype=np.uint64)


@pytest.mark.parametrize("threshold", [0, 4, 10])
def test_near_index_agrees_with_a_sequential_scan(threshold):
    hashes = clustered_hashes(700, 90)
    index = NearIndex(threshold)
    got = np.concatenate([index.query_and_add(hashes[i : i + 97]) for i in range(0, len(hashes), 97)])
    assert np.array_equal(got, sequential_scan(hashes, threshold))


def test_near_index_edits_need_both_images_near():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 2**63, 4, dtype=np.uint64)
    ref = rng.integers(0, 2**63, 4, dtype=np.uint64)
    index = NearIndex(4)
    # same target, same reference: duplicate; same target, other reference: not; plain image vs edit: never
    hashes = np.array([target[0], target[0] ^ np.uint64(1), target[0], target[0]], np.uint64)
    aux = np.array([ref[0], ref[0], ref[1], 0], np.uint64)
    has_aux = np.array([True, True, True, False])
    assert index.query_and_add(hashes, aux, has_aux).tolist() == [False, True, False, False]


def test_ineligible_hashes_are_neither_checked_nor_kept():
    index = NearIndex(4)
    h = np.array([5, 5, 5], np.uint64)
    assert index.query_and_add(h, eligible=np.array([False, True, True])).tolist() == [False, False, True]
    exact = ExactIndex()
    assert exact.query_and_add(h, np.array([False, True, True])).tolist() == [False, False, True]
    assert exact.query_and_add(np.array([5, 6, 6], np.uint64)).tolist() == [True, False, True]


def test_restored_index_continues_the_scan():
    hashes = clustered_hashes(600, 80, seed=2)
    whole = NearIndex(4)
    expected = whole.query_and_add(hashes)
    first = NearIndex(4)
    head = first.query_and_add(hashes[:300])
    resumed = NearIndex(4)
    resumed.add(hashes[:300][~head])  # what a progress record stores: the kept hashes
    assert np.array_equal(np.concatenate([head, resumed.query_and_add(hashes[300:])]), expected)


def test_near_search_grows_about_linearly():
    rng = np.random.default_rng(3)
    timings = {}
    for n in (5_000, 50_000):
        hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
        index = NearIndex(4)
        start = time.perf_counter()
        for i in range(0, n, 1024):
            index.query_and_add(hashes[i : i + 1024])
        timings[n] = time.perf_counter() - start
    assert timings[50_000] / timings[5_000] < 25  # 10x the data; quadratic would be ~100x (generous: shared CPUs)
