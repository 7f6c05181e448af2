"""Curation end to end on messy input: every bad sample quarantined with its reason, the good ones in shards, nothing
written outside the output prefix; contracts, contamination, idempotence and resumption."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from deepgen.curation import contracts as contracts_module
from deepgen.curation import runner
from deepgen.curation.curate import (CONTAMINATION, MANIFEST, QUARANTINE, QUARANTINE_REPORT, CurationParams, curate,
                                     load_quarantine, load_samples)
from deepgen.data.shards import read_samples
from curation_corpus import GENEVAL_PROMPT, encode, expected_outcomes, smooth_image, write_folder, write_tar

FAST = {"workers": 1, "progress": False}


def files_under(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def outcome(frame, key: str) -> tuple[str, list[str], list[str]]:
    row = frame[frame.key == key].iloc[0]
    return row.status, [r for r in row.reasons.split(";") if r], [f for f in row.fixes.split(";") if f]


def check_corpus_result(record: dict, keymap=lambda k: k, extra: dict | None = None) -> None:
    out = Path(record["manifest_uri"]).parent
    manifest = json.loads(Path(record["manifest_uri"]).read_text())
    frame = load_samples(manifest, str(out))
    expected = {keymap(k): v for k, v in expected_outcomes().items()} | (extra or {})
    assert set(frame.key) == set(expected)
    shard_samples = {s["key"]: s for s in read_samples(record["train_urls"] + record["heldout_urls"])}
    for key, want in expected.items():
        status, reasons, fixes = outcome(frame, key)
        if want.startswith("kept"):
            assert status == "kept", (key, reasons)
            if ":" in want:
                assert want.split(":", 1)[1] in fixes, (key, fixes)
            sample = shard_samples[key]
            assert sample["image"].mode == "RGB" and sample["image"].width % 32 == 0
        else:
            assert status != "kept" and reasons and reasons[0].startswith(want), (key, status, reasons)
            assert key not in shard_samples  # quarantined samples never reach a shard
    assert load_quarantine(record["manifest_uri"]) == {
        k: outcome(frame, k)[1] for k, v in expected.items() if not v.startswith("kept")}
    assert sum(record["counts"].values()) == sum(v.startswith("kept") for v in expected.values())
    for name in (MANIFEST, QUARANTINE, QUARANTINE_REPORT, CONTAMINATION):
        assert (out / name).is_file()
    report = json.loads((out / CONTAMINATION).read_text())
    assert report["per_benchmark"]["geneval"]["exact"] == 1
    assert report["per_benchmark"]["geneval"]["examples"]["exact"][0]["benchmark_prompt"] == GENEVAL_PROMPT
    assert manifest["counts"]["contamination"]["geneval"] == {"exact": 1}
    readable = (out / QUARANTINE_REPORT).read_text()
    assert "image_truncated" in readable and "geneval: exact 1" in readable


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    source = write_folder(root / "input")
    before = files_under(root)
    record = curate(CurationParams(source={"type": "folder", "uri": str(source)}, **FAST), str(root / "out"))
    return root, source, before, record


def test_corrupt_folder_corpus_is_quarantined_with_reasons(corpus_run):
    root, _, before, record = corpus_run
    check_corpus_result(record)
    after = files_under(root)
    assert {p: t for p, t in after.items() if p in before} == before  # the input is untouched
    assert all(root / "out" in p.parents for p in set(after) - set(before))  # and every new file is in the output


def test_corrupt_tar_corpus_with_a_climbing_member(tmp_path):
    tar = write_tar(tmp_path / "input" / "shard-0.tar",
                    extra_members=[("../x.png", encode(smooth_image(30))), ("../x.txt", b"escaped caption")])
    before = files_under(tmp_path.parent)
    record = curate(CurationParams(source={"type": "webdataset", "uri": str(tar.parent)}, **FAST),
                    str(tmp_path / "out"))
    from deepgen.curation.sources import safe_key

    check_corpus_result(record, keymap=lambda k: f"shard-0__{k}",
                        extra={safe_key("shard-0/../x"): "unsafe_member_path"})
    new = set(files_under(tmp_path.parent)) - set(before)
    assert new and all(tmp_path / "out" in p.parents for p in new)
    assert not (tmp_path / "x.png").exists() and not (tmp_path.parent / "x.png").exists()


def test_rerun_writes_nothing_and_new_input_gets_a_new_folder(corpus_run, tmp_path):
    root, source, _, record = corpus_run
    params = CurationParams(source={"type": "folder", "uri": str(source)}, **FAST)
    before = files_under(root / "out")
    assert curate(params, str(root / "out")) == record
    assert files_under(root / "out") == before
    copy = write_folder(tmp_path / "copy")  # the same input elsewhere: same data version
    elsewhere = curate(CurationParams(source={"type": "folder", "uri": str(copy)}, workers=2, progress=False),
                       str(tmp_path / "out"))
    assert elsewhere["data_version"] == record["data_version"]
    (copy / "good-01.txt").write_text("a changed caption")
    changed = curate(CurationParams(source={"type": "folder", "uri": str(copy)}, **FAST), str(tmp_path / "out"))
    assert changed["manifest_uri"] != elsewhere["manifest_uri"]
    assert changed["data_version"] != record["data_version"]


def test_a_host_with_threads_gets_spawned_workers_and_the_same_data(corpus_run, tmp_path):
    """Airflow's task runner runs threads beside the task: there the pool is spawned, not forked (a forked worker
    inherited the runner's SIGTERM handler, ignored Pool.terminate and hung `airflow dags test`), and the shards are
    the same."""
    root, source, _, record = corpus_run
    done = threading.Event()
    host_thread = threading.Thread(target=done.wait, daemon=True)
    host_thread.start()
    try:
        assert runner._start_method() == "spawn"
        spawned = curate(CurationParams(source={"type": "folder", "uri": str(source)}, workers=2, progress=False),
                         str(tmp_path / "out"))
    finally:
        done.set()
        host_thread.join()
    assert spawned["data_version"] == record["data_version"]


def many_images(folder: Path, n: int) -> Path:
    """n images, every 6th a copy of an image two chunks back (so dedup state must survive a resume)."""
    folder.mkdir(parents=True)
    seeds: dict[int, int] = {}
    for i in range(n):
        seed = seeds[i] = seeds[i - 12] if i % 6 == 5 and i >= 12 else 100 + i
        (folder / f"img{i:03d}.png").write_bytes(encode(smooth_image(seed, (64, 64))))
        (folder / f"img{i:03d}.txt").write_text(f"picture number {i} of a smooth colour field")
    return folder


def test_interrupted_curation_resumes_without_duplicates_or_gaps(tmp_path):
    source = many_images(tmp_path / "input", 36)
    params = CurationParams(source={"type": "folder", "uri": str(source)}, chunk_records=12, shard_max_count=4,
                            heldout_fraction=0.2, contract_batch_rows=7, **FAST)
    reference = curate(params, str(tmp_path / "reference"))
    in_chunk0 = sum("-00000-" in u for u in reference["train_urls"] + reference["heldout_urls"])
    with pytest.raises(RuntimeError, match="interrupted"):  # mid-chunk: chunk 0 done, chunk 1 partly written
        curate(params, str(tmp_path / "out"), _fail_after_shards=in_chunk0 + 1)
    out = Path(reference["manifest_uri"]).parent.name
    assert not (tmp_path / "out" / out / MANIFEST).exists()
    assert (tmp_path / "out" / out / "_progress" / "chunk-00000.json").exists()
    with pytest.raises(RuntimeError, match="interrupted"):  # and again, later in the run
        curate(params, str(tmp_path / "out"), _fail_after_shards=2)
    resumed = curate(params, str(tmp_path / "out"))
    assert resumed["data_version"] == reference["data_version"]
    assert resumed["counts"] == reference["counts"]
    keys = [s["key"] for s in read_samples(resumed["train_urls"] + resumed["heldout_urls"])]
    want = [s["key"] for s in read_samples(reference["train_urls"] + reference["heldout_urls"])]
    assert sorted(keys) == sorted(want) and len(keys) == len(set(keys))
    manifest = json.loads(Path(resumed["manifest_uri"]).read_text())
    assert manifest["counts"]["duplicates"] == 4  # the copies across chunks were still caught
    assert {p.name for p in (tmp_path / "out" / out / "train").iterdir()} == \
        {Path(u).name for u in resumed["train_urls"]}


def test_contamination_can_be_reported_without_excluding(tmp_path):
    source = tmp_path / "input"
    source.mkdir()
    prompts = [GENEVAL_PROMPT, "a photo of a bench and a red cat", "a smooth field of colour"]
    for i, text in enumerate(prompts):
        (source / f"p{i}.png").write_bytes(encode(smooth_image(40 + i)))
        (source / f"p{i}.txt").write_text(text)
    kept = curate(CurationParams(source={"type": "folder", "uri": str(source)}, contamination={"exclude": False},
                                 heldout_fraction=0.0, **FAST), str(tmp_path / "kept"))
    assert kept["counts"]["train"] == 3
    report = json.loads((Path(kept["manifest_uri"]).parent / CONTAMINATION).read_text())
    assert report["flagged"] >= 1 and not report["excluded"]
    excluded = curate(CurationParams(source={"type": "folder", "uri": str(source)}, heldout_fraction=0.0, **FAST),
                      str(tmp_path / "excluded"))
    assert excluded["counts"]["train"] == 3 - report["flagged"]


def test_contract_failures_are_quarantined_and_fail_the_run_above_the_rate(tmp_path, monkeypatch):
    import great_expectations as gx

    original = contracts_module.sample_expectations

    def stricter(*args, **kwargs):  # a contract the data cannot meet: captions of at most 30 characters
        return original(*args, **kwargs) + [
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="caption", min_value=1, max_value=30)]

    monkeypatch.setattr(contracts_module, "sample_expectations", stricter)
    source = write_folder(tmp_path / "input")
    params = CurationParams(source={"type": "folder", "uri": str(source)}, **FAST)
    with pytest.raises(ValueError, match="broke the data contracts"):
        curate(params, str(tmp_path / "strict"))
    record = curate(CurationParams(**{**params.__dict__, "max_failure_rate": 1.0}), str(tmp_path / "lenient"))
    out = Path(record["manifest_uri"]).parent
    quarantine = json.loads((out / QUARANTINE).read_text())
    failure = quarantine["contract_failures"][0]
    assert failure["kind"] == "samples" and failure["quarantined"] >= 1
    assert "expect_column_value_lengths_to_be_between(caption)" in [e["expectation"] for e in failure["expectations"]]
    frame = load_samples(json.loads((out / MANIFEST).read_text()), str(out))
    broken = frame[frame.status == "contract"]
    assert len(broken) == failure["quarantined"] and (broken.caption.str.len() > 30).all()
    in_shards = {s["key"] for s in read_samples(record["train_urls"] + record["heldout_urls"])}
    assert not in_shards & set(broken.key)
    assert "Data contract failures" in (out / QUARANTINE_REPORT).read_text()


def test_a_shard_breaking_its_contract_is_not_written(tmp_path, monkeypatch):
    import great_expectations as gx

    original = contracts_module.shard_expectations
    monkeypatch.setattr(contracts_module, "shard_expectations", lambda *a, **k: original(*a, **k) + [
        gx.expectations.ExpectColumnValuesToBeBetween(column="count", min_value=1, max_value=3)])
    source = many_images(tmp_path / "input", 14)  # shards of 4, 4, 4 (over the limit of 3) and 2
    record = curate(CurationParams(source={"type": "folder", "uri": str(source)}, shard_max_count=4,
                                   heldout_fraction=0.0, max_failure_rate=1.0, dedup={"exact": False},
                                   **FAST), str(tmp_path / "out"))
    out = Path(record["manifest_uri"]).parent
    frame = load_samples(json.loads((out / MANIFEST).read_text()), str(out))
    assert (frame.status == "contract_shard").sum() == 12 and record["counts"]["train"] == 2
    on_disk = {p.name for p in (out / "train").glob("*.tar")} if (out / "train").exists() else set()
    assert on_disk == {Path(u).name for u in record["train_urls"]}


def test_prompt_list_and_edit_index_curate_to_shards(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in
                                 ["draw a lighthouse at dusk", "Draw a lighthouse at dusk!", GENEVAL_PROMPT,
                                  "a bowl of ramen on a wooden table"]) + "\n")
    record = curate(CurationParams(source={"type": "prompts", "uri": str(prompts)}, heldout_fraction=0.0, **FAST),
                    str(tmp_path / "out"))
    got = list(read_samples(record["train_urls"]))
    assert [s["caption"] for s in got] == ["draw a lighthouse at dusk", "a bowl of ramen on a wooden table"]
    assert all(s["image"] is None and s["kind"] == "prompt" for s in got)

    images = tmp_path / "raw"
    images.mkdir()
    for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3), ("d.png", 4)):
        (images / name).write_bytes(encode(smooth_image(seed)))
    index = tmp_path / "edit.json"
    index.write_text(json.dumps([{"input_image": ["a.png"], "output_image": "b.png", "instruction": "make it b"},
                                 {"input_image": ["c.png", "a.png"], "output_image": "d.png",
                                  "instruction": "blend the two"}]))
    record = curate(CurationParams(source={"type": "deepgen_json", "index": str(index), "image_root": str(images)},
                                   heldout_fraction=0.0, **FAST), str(tmp_path / "out"))
    got = list(read_samples(record["train_urls"]))
    assert [len(s["source_images"]) for s in got] == [1, 2]
    assert got[0]["source_image"].size == (64, 64) and got[0]["caption"] == "make it b"
    assert np.asarray(got[0]["image"]).shape == (64, 64, 3)


def test_seeded_prompt_file_is_flagged_through_curation(tmp_path):
    """Benchmark prompts hidden in a training prompt file, verbatim, surface-edited and lightly edited, are flagged
    (even when another filter, e.g. caption length, rejects them too); clean prompts are not."""
    import random

    from deepgen.curation.contamination import load_benchmarks
    from test_contamination import seeded_corpus

    texts, truth = seeded_corpus(load_benchmarks(), random.Random(11), per_benchmark=8, n_clean=400)
    prompts = tmp_path / "train_prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": t}) for t in texts) + "\n")
    record = curate(CurationParams(source={"type": "prompts", "uri": str(prompts)}, heldout_fraction=0.0,
                                   dedup={"exact": False}, **FAST), str(tmp_path / "out"))
    out = Path(record["manifest_uri"]).parent
    frame = load_samples(json.loads((out / MANIFEST).read_text()), str(out))
    assert len(frame) == len(texts)
    flagged = {i for i, c in enumerate(frame.contamination) if isinstance(c, str)}
    exact = {i for i, (kind, _) in truth.items() if kind == "exact"}
    edited = set(truth) - exact
    assert exact <= flagged  # recall 1.0 on verbatim and surface-edited copies
    assert len(edited & flagged) >= 0.85 * len(edited)
    assert flagged <= set(truth)  # precision 1.0: no clean prompt flagged
    assert not set(frame.key[frame.status == "kept"]) & set(frame.key[sorted(flagged)])  # none reaches a shard


def test_parameter_typos_are_errors():
    with pytest.raises(ValueError, match="unknown keys"):
        CurationParams.from_dict({"num_sample": 3})
    with pytest.raises(ValueError, match="curation.filters"):
        curate(CurationParams(filters={"min_sides": 3}, **FAST), "/nonexistent-never-written")
