"""Sources: each input format yields the same raw records, in a stable order, without extracting or trusting paths."""

from __future__ import annotations

import json
import tarfile

import pandas as pd
import pytest

from deepgen import storage
from deepgen.curation.curate import CurationParams, resolve_settings
from deepgen.curation.process import process
from deepgen.curation.sources import FileRef, JsonField, make_source
from curation_corpus import encode, smooth_image, write_tar


def settings_for(source):
    return resolve_settings(CurationParams(), source)


def test_stat_files_streams_in_global_path_order(tmp_path):
    for rel in ("b.jpg", "b/x.jpg", "b0.jpg", "a/z.txt", "a.txt", ".hidden"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rels = [st.rel for st in storage.stat_files(str(tmp_path))]
    assert rels == sorted(rels) == [".hidden", "a.txt", "a/z.txt", "b.jpg", "b/x.jpg", "b0.jpg"]
    single = list(storage.stat_files(str(tmp_path / "a.txt")))
    assert [s.rel for s in single] == ["a.txt"]


def test_folder_groups_sidecars_edits_and_nested_keys(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(encode(smooth_image(1)))
    (tmp_path / "a.txt").write_bytes(b"caption a")
    (tmp_path / "e.png").write_bytes(encode(smooth_image(2)))
    (tmp_path / "e.src.png").write_bytes(encode(smooth_image(3)))
    (tmp_path / "e.src1.jpg").write_bytes(encode(smooth_image(4), "JPEG"))
    (tmp_path / "e.SRC2.WEBP").write_bytes(encode(smooth_image(6), "WEBP"))  # extensions in any case
    (tmp_path / "e.txt").write_bytes(b"make it blue")
    (tmp_path / "sub" / "j.jpeg").write_bytes(encode(smooth_image(5), "JPEG"))
    sidecar = {"caption": "from json", "license": "cc0", "source": "https://example.org/j", "secret_token": "x"}
    (tmp_path / "sub" / "j.json").write_text(json.dumps(sidecar))
    (tmp_path / "README.md").write_text("not a sample")  # no file of the layout under this key
    (tmp_path / ".tmp.png").write_bytes(b"a temporary")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.png").write_bytes(b"a hidden folder")
    source = make_source({"type": "folder", "uri": str(tmp_path)})
    records = list(source.records())
    assert [r.key for r in records] == ["a", "e", "sub/j"]
    assert [r.error for r in records] == [None, None, None]
    assert records[0].caption == FileRef(str(tmp_path / "a.txt"))
    assert records[1].meta["kind"] == "edit"
    assert records[1].sources == tuple(FileRef(str(tmp_path / n)) for n in ("e.src.png", "e.src1.jpg", "e.SRC2.WEBP"))
    assert [r.key for r in source.records(start=2)] == ["sub/j"]
    results = [process(r, settings_for(source)) for r in records]
    assert [r.reasons for r in results] == [[], [], []]
    assert set(results[1].members) >= {"png", "src.png", "src1.png", "src2.png", "txt", "json"}
    assert results[2].caption == "from json" and json.loads(results[2].members["json"])["license"] == "cc0"
    assert (results[2].license, results[2].source) == ("cc0", "https://example.org/j")
    assert (results[0].license, results[0].source) == (None, None)
    assert "secret_token" not in json.loads(results[2].members["json"])  # secrets never reach a shard or a log
    assert results[2].key == "sub__j"


@pytest.mark.parametrize("files, reason, culprit", [
    ({"k.src.png": 1, "k.txt": b"make it red"}, "edit_target_missing", "k.src.png"),
    ({"k.txt": b"a caption without its picture"}, "image_missing", "k.txt"),
    ({"k.png": 1, "k.jpg": 2, "k.txt": b"which one"}, "image_ambiguous", "k.png"),
    ({"k.png": 1, "k.src.png": 2, "k.src.jpg": 3, "k.txt": b"edit"}, "image_ambiguous", "k.src.png"),
    ({"k.png": 1, "k.src.png": 2, "k.src2.png": 3, "k.txt": b"edit"}, "source_gap", "k.src2.png"),
    ({"k.png": 1, "k.src1.png": 2, "k.txt": b"edit"}, "source_gap", "k.src1.png"),
    ({"k.png": 1, "k.src.png": 2, "k.src2.png": 3, "k.src3.png": 4, "k.txt": b"edit"}, "source_gap", "k.src2.png"),
    ({"k.png": 1, "k.mask.png": 2, "k.txt": b"masked"}, "unexpected_file", "k.mask.png"),
    ({"k.bmp": 1, "k.txt": b"a bitmap"}, "unexpected_file", "k.bmp"),
    ({"k.png": 1, "k.src0.png": 2, "k.txt": b"edit"}, "unexpected_file", "k.src0.png"),
])
def test_folder_broken_sample_is_quarantined_naming_the_file(tmp_path, caplog, files, reason, culprit):
    """A sample that breaks the layout is quarantined (the other samples go on) with its reason; its origin and one
    warning line name the file at fault."""
    for name, content in {**files, "ok.png": 9, "ok.txt": b"a good sample"}.items():
        data = content if isinstance(content, bytes) else encode(smooth_image(content))
        (tmp_path / name).write_bytes(data)
    source = make_source({"type": "folder", "uri": str(tmp_path)})
    with caplog.at_level("WARNING", logger="deepgen.curation.sources.folder"):
        records = list(source.records())
    assert [(r.key, r.error) for r in records] == [("k", reason), ("ok", None)]
    assert records[0].origin == str(tmp_path / culprit)
    result = process(records[0], settings_for(source))
    assert result.reasons == [reason] and result.members is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(tmp_path / culprit) in lines[0] and reason in lines[0]
    assert "\n" not in lines[0]


def test_folder_provenance_reaches_the_per_sample_manifest(tmp_path):
    from deepgen.curation.curate import curate, load_samples

    root = tmp_path / "in"
    root.mkdir()
    for i, (license_, source) in enumerate([("cc-by-4.0", "https://example.org/a"), (None, None)]):
        (root / f"p{i}.png").write_bytes(encode(smooth_image(20 + i)))
        meta = {"caption": f"a smooth picture number {i}"}
        if license_:
            meta.update(licence=license_, url=source)  # the alternative spellings
        (root / f"p{i}.json").write_text(json.dumps(meta))
    (root / "e.jpg").write_bytes(encode(smooth_image(30), "JPEG"))
    (root / "e.src.webp").write_bytes(encode(smooth_image(31), "WEBP"))
    (root / "e.txt").write_text("turn the picture around")
    (root / "e.json").write_text(json.dumps({"license": "cc0", "source": "my camera"}))
    (root / "orphan.src.png").write_bytes(encode(smooth_image(32)))
    (root / "orphan.txt").write_text("an edit whose target got lost")
    record = curate(CurationParams(source={"type": "folder", "uri": str(root)}, heldout_fraction=0.0,
                                   workers=1, progress=False), str(tmp_path / "out"))
    out = storage.join(str(tmp_path / "out"), record["manifest_uri"].rsplit("/", 2)[-2])
    frame = load_samples(json.loads(storage.read_bytes(record["manifest_uri"])), out).set_index("key")
    assert frame.loc["p0", ["license", "source"]].tolist() == ["cc-by-4.0", "https://example.org/a"]
    assert frame.loc["p1", ["license", "source"]].isna().all()
    assert frame.loc["e", ["kind", "license", "source", "status"]].tolist() == ["edit", "cc0", "my camera", "kept"]
    assert frame.loc["orphan", ["status", "reasons"]].tolist() == ["rejected", "edit_target_missing"]
    assert frame.loc["orphan", "origin"] == str(root / "orphan.src.png")
    assert record["counts"] == {"train": 3, "heldout": 0}


def test_deepgen_json_formats_and_unsafe_entries(tmp_path):
    images, captions = tmp_path / "raw", tmp_path / "captions"
    (images / "image").mkdir(parents=True)
    captions.mkdir()
    for name, seed in (("p.png", 1), ("image/16685.png", 2), ("src.png", 3), ("out.png", 4)):
        (images / name).write_bytes(encode(smooth_image(seed)))
    (captions / "p.json").write_text(json.dumps({"caption": "a pretraining caption", "other": "x"}))
    entries = [
        {"image": "p.png", "annotation": "p.json"},
        {"type": "T2I_SFT", "txt": "an sft caption", "image": "", "image_path": "image/16685.png"},
        {"input_image": ["src.png"], "output_image": "out.png", "instruction": "turn it around"},
        {"type": "T2I_SFT", "txt": "escape", "image_path": "../../etc/passwd"},
        {"something": "else"},
        ["not", "an", "object"],
    ]
    index = tmp_path / "data.json"
    index.write_text(json.dumps(entries))
    source = make_source({"type": "deepgen_json", "index": str(index), "image_root": str(images),
                          "caption_root": str(captions)})
    records = list(source.records())
    assert [r.key for r in records] == [f"data-{i:08d}" for i in range(6)]
    assert isinstance(records[0].caption, JsonField)
    assert [r.error for r in records] == [None, None, None, "unsafe_path", "index_entry_invalid",
                                          "index_entry_invalid"]
    results = [process(r, settings_for(source)) for r in records[:3]]
    assert [r.caption for r in results] == ["a pretraining caption", "an sft caption", "turn it around"]
    assert [r.kind for r in results] == ["t2i", "t2i", "edit"] and "src.png" in results[2].members
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in entries[:2]) + "\n{broken\n")
    records = list(make_source({"type": "deepgen_json", "index": str(jsonl), "image_root": str(images),
                                "caption_root": str(captions)}).records())
    assert [r.error for r in records] == [None, None, "index_entry_invalid"]


def test_tar_source_never_extracts_and_refuses_unsafe_members(tmp_path):
    samples = [("s1", {"jpg": encode(smooth_image(1), "JPEG"), "txt": b"one"}, "kept"),
               ("s2", {"png": encode(smooth_image(2)), "json": json.dumps({"caption": "two", "url": "u"}).encode()},
                "kept"),
               ("s3", {"png": encode(smooth_image(3))}, "kept")]
    tar = write_tar(tmp_path / "shards" / "00000.tar", samples,
                    extra_members=[("../x.png", encode(smooth_image(4))), ("../x.txt", b"evil")])
    with tarfile.open(tar, "a") as handle:  # and a symlink member
        info = tarfile.TarInfo("link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        handle.addfile(info)
    pd.DataFrame({"key": ["s3"], "caption": ["three from parquet"], "url": ["http://x/3"],
                  "status": ["success"]}).to_parquet(tmp_path / "shards" / "00000.parquet")
    before = {p for p in tmp_path.parent.rglob("*")}
    source = make_source({"type": "webdataset", "uri": str(tmp_path / "shards")})
    records = list(source.records())
    assert {p for p in tmp_path.parent.rglob("*")} == before  # nothing extracted anywhere
    assert [r.key for r in records] == ["00000/s1", "00000/s2", "00000/s3", "00000/../x", "00000/link"]
    assert [r.error for r in records] == [None, None, None, "unsafe_member_path", "member_not_a_file"]
    assert records[1].caption == "two" and records[1].meta["url"] == "u"
    assert records[2].caption == "three from parquet" and records[2].meta["url"] == "http://x/3"
    assert [r.key for r in source.records(start=3)] == ["00000/../x", "00000/link"]


def test_broken_tar_yields_what_it_had_and_a_reason(tmp_path):
    good = write_tar(tmp_path / "t" / "a.tar", [("s1", {"png": encode(smooth_image(1)), "txt": b"one"}, "kept"),
                                                 ("s2", {"png": encode(smooth_image(2)), "txt": b"two"}, "kept")])
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2 + 100])
    records = list(make_source({"type": "webdataset", "uri": str(good)}).records())
    assert records[0].error is None
    assert records[-1].error.startswith("tar_unreadable")


def test_prompt_source_reads_every_format(tmp_path):
    (tmp_path / "a.txt").write_text("first prompt\n\nsecond prompt\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"prompt": "third"}) + "\n")
    (tmp_path / "c.csv").write_text("id,prompt_en\n1,fourth\n")
    (tmp_path / "d.txt").write_bytes(b"caf\xe9\n")
    records = list(make_source({"type": "prompts", "uri": str(tmp_path)}).records())
    assert [r.caption for r in records if r.error is None] == ["first prompt", "second prompt", "third", "fourth"]
    assert records[-1].key == "d-unreadable" and records[-1].error.startswith("prompt_file_unreadable")


def test_unknown_source_and_options_are_errors():
    with pytest.raises(ValueError, match="unknown source"):
        make_source({"type": "laion"})
    with pytest.raises(ValueError, match="folder"):
        make_source({"type": "folder", "uri": "x", "captions": "txt"})
