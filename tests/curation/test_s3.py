"""Sources read from, and shards written to, a real S3 endpoint on loopback (moto's server mode): the shards read back
identical to a local curation of the same input, and the credentials appear in no log and no output."""

from __future__ import annotations

import json
import logging

from deepgen import storage
from deepgen.curation.curate import CurationParams, curate, load_quarantine
from deepgen.data.shards import png_bytes, read_samples
from curation_corpus import corpus_samples, upload_tree, write_folder, write_tar

FAST = {"workers": 1, "progress": False}


def as_comparable(urls: list[str]) -> list[tuple]:
    return [(s["key"], s["caption"], png_bytes(s["image"]), s.get("kind"), s.get("category"),
             tuple(png_bytes(r) for r in s["source_images"])) for s in read_samples(urls)]


def test_folder_on_s3_to_shards_on_s3_match_local(s3, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="deepgen")
    local = write_folder(tmp_path / "input")
    upload_tree(local, f"{s3}/raw/images")
    local_record = curate(CurationParams(source={"type": "folder", "uri": str(local)}, **FAST), str(tmp_path / "out"))
    s3_record = curate(CurationParams(source={"type": "folder", "uri": f"{s3}/raw/images"}, workers=2,
                                      progress=False), f"{s3}/shards")
    assert s3_record["manifest_uri"].startswith(f"{s3}/shards/") and storage.exists(s3_record["manifest_uri"])
    assert all(u.startswith(f"{s3}/shards/") for u in s3_record["train_urls"] + s3_record["heldout_urls"])
    assert s3_record["data_version"] == local_record["data_version"]  # a version names content, not a place
    assert s3_record["counts"] == local_record["counts"]
    for split in ("train_urls", "heldout_urls"):
        assert as_comparable(s3_record[split]) == as_comparable(local_record[split])
    assert load_quarantine(s3_record["manifest_uri"]) == load_quarantine(local_record["manifest_uri"])
    # a re-run finds the manifest on S3 and writes nothing
    listing = {st.rel: st.tag for st in storage.stat_files(f"{s3}/shards")}
    assert curate(CurationParams(source={"type": "folder", "uri": f"{s3}/raw/images"}, **FAST),
                  f"{s3}/shards") == s3_record
    assert {st.rel: st.tag for st in storage.stat_files(f"{s3}/shards")} == listing
    written = b"".join(storage.read_bytes(st.uri) for st in storage.stat_files(f"{s3}/shards")
                       if not st.rel.endswith((".tar", ".parquet", ".npz")))
    for secret in ("testing-secret-never-logged", "testing-key-id"):
        assert secret not in caplog.text and secret.encode() not in written


def test_tar_and_prompt_sources_on_s3(s3, tmp_path):
    tar = write_tar(tmp_path / "tars" / "shard-0.tar", corpus_samples()[:4])
    upload_tree(tar.parent, f"{s3}/wds")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "rl.txt").write_text("a red lighthouse at dusk\na bowl of ramen\n")
    upload_tree(tmp_path / "prompts", f"{s3}/prompts")
    from_s3 = curate(CurationParams(source={"type": "webdataset", "uri": f"{s3}/wds"}, heldout_fraction=0.0,
                                    **FAST), str(tmp_path / "out"))
    from_disk = curate(CurationParams(source={"type": "webdataset", "uri": str(tar.parent)}, heldout_fraction=0.0,
                                      **FAST), str(tmp_path / "out"))
    assert as_comparable(from_s3["train_urls"]) == as_comparable(from_disk["train_urls"])
    assert from_s3["counts"]["train"] == 4
    prompts = curate(CurationParams(source={"type": "prompts", "uri": f"{s3}/prompts/rl.txt"}, heldout_fraction=0.0,
                                    **FAST), f"{s3}/prompt-shards")
    assert [s["caption"] for s in read_samples(prompts["train_urls"])] == ["a red lighthouse at dusk",
                                                                          "a bowl of ramen"]
    manifest = json.loads(storage.read_bytes(prompts["manifest_uri"]))
    assert manifest["location"]["source"]["uri"] == [f"{s3}/prompts/rl.txt"]
