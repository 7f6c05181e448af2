"""Shard round trip: what curation writes is what training and evaluation read, byte for byte and spec for spec."""

from __future__ import annotations

import json

from deepgen import world
from deepgen.curation.curate import CurationParams, curate_shapes_world
from deepgen.data.shards import png_bytes, read_samples


def test_round_trip_preserves_images_captions_and_specs(small_shards):
    record, params, _ = small_shards
    read = {s["key"]: s for s in read_samples(record["train_urls"] + record["heldout_urls"])}
    originals = {s["key"]: s for s in world.generate_samples(params.num_samples, params.seed, params.image_size)}
    assert set(read) == set(originals)
    for key, original in originals.items():
        got = read[key]
        assert got["caption"] == original["caption"]
        assert got["spec"] == json.loads(json.dumps(original["spec"]))
        assert png_bytes(got["image"]) == png_bytes(original["image"])
        assert (got["source_image"] is None) == (original.get("source_image") is None)
        if got["source_image"] is not None:
            assert png_bytes(got["source_image"]) == png_bytes(original["source_image"])


def test_split_is_by_scene_and_counts_match_manifest(small_shards):
    record, _, _ = small_shards
    train = list(read_samples(record["train_urls"]))
    heldout = list(read_samples(record["heldout_urls"]))
    assert len(train) == record["counts"]["train"] and len(heldout) == record["counts"]["heldout"]
    assert heldout, "the held-out split must not be empty"
    assert all(world.sample_is_held_out(s) for s in heldout)
    assert not any(world.sample_is_held_out(s) for s in train)
    train_scenes = {s["scene_key"] for s in train}
    assert not train_scenes & {s["scene_key"] for s in heldout}


def test_same_input_same_version_and_nothing_rewritten(small_shards):
    record, params, out = small_shards
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = curate_shapes_world(params, str(out))
    assert again == record
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_version_is_content_hash_and_reproducible_elsewhere(small_shards, tmp_path):
    record, params, _ = small_shards
    elsewhere = curate_shapes_world(params, str(tmp_path))
    assert elsewhere["data_version"] == record["data_version"]
    changed = curate_shapes_world(CurationParams(**{**params.__dict__, "seed": params.seed + 1}), str(tmp_path))
    assert changed["data_version"] != record["data_version"]


def test_tar_bytes_are_webdatasets_own_and_read_back(tmp_path):
    import io

    import webdataset as wds

    from deepgen.data.shards import tar_bytes

    records = [{"__key__": "a-1", "png": png_bytes(world.render_word("cat")), "txt": b"the word", "json": b"{}"},
               {"__key__": "b" * 120, "txt": "a long key", "json": b'{"kind": "prompt"}'},
               {"__key__": "e", "png": png_bytes(world.render_word("dog")), "src.png": png_bytes(world.render_word("a")),
                "src1.png": png_bytes(world.render_word("b")), "txt": b"edit", "json": b'{"kind": "edit"}'}]
    reference = io.BytesIO()
    writer = wds.TarWriter(reference, mtime=0, format="USTAR_FORMAT")
    writer.write(records[0])
    writer.close()
    assert tar_bytes(records[:1]) == reference.getvalue()  # byte for byte, without tarfile's per-member cost
    (tmp_path / "s.tar").write_bytes(tar_bytes(records))
    got = list(read_samples([str(tmp_path / "s.tar")]))
    assert [s["key"] for s in got] == ["a-1", "b" * 120, "e"]
    assert got[1]["image"] is None and got[1]["source_images"] == [] and got[1]["kind"] == "prompt"
    assert len(got[2]["source_images"]) == 2 and got[2]["source_image"] is got[2]["source_images"][0]
    assert list(read_samples([])) == []
