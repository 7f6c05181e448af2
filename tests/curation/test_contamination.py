"""Benchmark-contamination check: recall on seeded benchmark prompts, precision on clean captions, prompt-file formats,
and the `deepgen check-contamination` command (exit codes, --json, one-line errors)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from deepgen.benchdata import BENCHDATA_DIR
from deepgen.curation.contamination import (
    BENCHMARKS,
    ContaminationIndex,
    _lsh_rows,
    exact_key,
    jaccard,
    load_benchmarks,
    normalize_text,
    read_prompt_file,
    shingles,
)

SRC = Path(__file__).resolve().parents[2] / "src"

# --------------------------------------------------------------------------------------------------------------------
# Synthetic training data: benchmark prompts (verbatim or lightly edited) hidden among clean captions

COLOURS = "red green blue yellow purple gray cyan magenta".split()
SHAPES = "square circle triangle rectangle ellipse pentagon cross semicircle".split()
RELATIONS = ["to the left of", "to the right of", "above", "below", "next to", "behind", "in front of"]
NOUNS = "dog cat man woman child car bus tree house boat bird horse table chair cup flower river beach bench".split()
ADJECTIVES = "small large wooden old bright dark tiny shiny soft wet dry happy".split()
VERBS = "sitting standing running lying walking parked floating flying".split()
FILLERS = ADJECTIVES + NOUNS


def clean_caption(rng: random.Random) -> str:
    """A ShapesWorld-like or random caption: the kind of text we train on, unrelated to any benchmark."""
    c, s = rng.choice, rng.choice(SHAPES)
    kind = rng.random()
    if kind < 0.3:
        return f"a {c(['small', 'big'])} {c(COLOURS)} {s} is {c(RELATIONS)} a {c(COLOURS)} {c(SHAPES)}"
    if kind < 0.5:
        return f"there are {c(['two', 'three', 'four'])} {c(COLOURS)} {s}s and one {c(COLOURS)} {c(SHAPES)}"
    if kind < 0.8:
        return f"a {c(ADJECTIVES)} {c(NOUNS)} {c(VERBS)} {c(['on', 'near', 'in'])} the {c(ADJECTIVES)} {c(NOUNS)}"
    if kind < 0.9:  # GenEval's template with non-GenEval objects: the hardest clean case
        return f"a photo of a {c(COLOURS)} {s}"
    return " ".join(c(NOUNS + ADJECTIVES + VERBS + ["a", "the", "of", "on"]) for _ in range(rng.randint(5, 25)))


def surface_edit(text: str, rng: random.Random) -> str:
    """Case, punctuation, whitespace and typography changes only: must still be an exact match."""
    edits = [
        str.upper,
        str.lower,
        lambda t: t.replace(",", "").replace(".", ""),
        lambda t: t.rstrip(".") + "!!",
        lambda t: "  " + t.replace(" ", "   ") + "\t",
        lambda t: t.replace("'", "\u2019"),
    ]
    for edit in rng.sample(edits, rng.randint(1, 3)):
        text = edit(text)
    return text


def light_edit(text: str, rng: random.Random) -> str:
    """One or two words swapped (adjacent), added, dropped or replaced, plus maybe a surface edit."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        op, i = rng.choice(["swap", "add", "drop", "replace"]), rng.randrange(max(len(words) - 1, 1))
        if op == "swap" and len(words) > 1:
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == "drop" and len(words) > 3:
            del words[i]
        elif op == "replace":
            words[i] = rng.choice(FILLERS)
        else:
            words.insert(i, rng.choice(FILLERS))
    text = " ".join(words)
    return surface_edit(text, rng) if rng.random() < 0.5 else text


def seeded_corpus(benchmarks, rng, per_benchmark=40, n_clean=3000):
    """(texts, {index: (kind, benchmark)}) with `per_benchmark` exact and edited seeds of every benchmark."""
    texts, truth = [clean_caption(rng) for _ in range(n_clean)], {}
    for name, prompts in benchmarks.items():
        for prompt in rng.sample(prompts, per_benchmark):
            truth[len(texts)] = ("exact", name)
            texts.append(prompt if rng.random() < 0.3 else surface_edit(prompt, rng))
        for prompt in rng.sample(prompts, per_benchmark):
            truth[len(texts)] = ("edited", name)
            texts.append(light_edit(prompt, rng))
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], {new: truth[old] for new, old in enumerate(order) if old in truth}


@pytest.fixture(scope="module")
def benchmarks():
    return load_benchmarks()


@pytest.fixture(scope="module")
def index(benchmarks):
    return ContaminationIndex(benchmarks)


# --------------------------------------------------------------------------------------------------------------------
# Library


def test_normalize_text():
    assert normalize_text("  A photo,  of a BENCH!! ") == "a photo of a bench"
    assert normalize_text("ＡＢＣ ﬁsh") == "abc fish"  # NFKC: full-width letters, ligatures
    assert normalize_text("Don\u2019t stop: red-haired Straße") == "dont stop red haired strasse"
    assert normalize_text("...") == ""
    # punctuation deleted or spaced by whatever cleaned a copy: still the same exact key
    assert len({exact_key(normalize_text(s)) for s in ["3.5 red-haired", "35 redhaired", "3 5 red haired"]}) == 1


def test_loaders_read_every_packaged_benchmark(benchmarks):
    assert set(benchmarks) == set(BENCHMARKS)
    sizes = {name: len(prompts) for name, prompts in benchmarks.items()}
    assert sizes == {"geneval": 553, "dpg_bench": 1065, "wise": 1000, "t2i_corebench": 1080, "unigenbench": 600,
                     "ocr_prompts": 1018}  # fmt: skip
    assert all(isinstance(p, str) and p.strip() for prompts in benchmarks.values() for p in prompts)
    assert "a photo of a bench" in benchmarks["geneval"]
    for name in ("wise", "t2i_corebench", "unigenbench", "ocr_prompts", "dpg_bench"):
        assert (BENCHDATA_DIR / BENCHMARKS[name][0].split("/")[0]).is_dir()
        assert not any(p.lstrip().startswith(("{", "[")) for p in benchmarks[name])  # text, not raw JSON


def test_load_benchmarks_partial_and_missing_dirs(tmp_path):
    (tmp_path / "ocr_prompts").mkdir()
    (tmp_path / "ocr_prompts" / "test.txt").write_text("A sign that reads \"OPEN\"\n\nA mug saying \"hi\"\n")
    assert load_benchmarks(tmp_path) == {"ocr_prompts": ['A sign that reads "OPEN"', 'A mug saying "hi"']}
    with pytest.raises(FileNotFoundError, match="no benchmark prompt files"):
        load_benchmarks(tmp_path / "ocr_prompts")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_benchmarks(tmp_path / "absent")


def test_recall_and_precision_on_seeded_corpus(benchmarks, index):
    texts, truth = seeded_corpus(benchmarks, random.Random(0))
    report = index.check(texts)
    exact = {i for i, (kind, _) in truth.items() if kind == "exact"}
    edited = {i for i, (kind, _) in truth.items() if kind == "edited"}
    clean = set(range(len(texts))) - exact - edited
    exact_hits = {m.index for found in report.per_benchmark.values() for m in found.exact}
    exact_right = {i for i in exact if any(m.index == i for m in report.per_benchmark[truth[i][1]].exact)}

    exact_recall = len(exact_right) / len(exact)
    edited_recall = len(edited & report.flagged) / len(edited)
    precision = len(report.flagged - clean) / len(report.flagged)
    clean_fp_rate = len(report.flagged & clean) / len(clean)
    per_benchmark_edit_recall = {
        name: sum(1 for i in edited if truth[i][1] == name and i in report.flagged)
        / sum(1 for i in edited if truth[i][1] == name)
        for name in benchmarks
    }
    per_benchmark = {k: round(v, 3) for k, v in per_benchmark_edit_recall.items()}
    print(f"\nexact recall {exact_recall:.3f} ({len(exact)}), light-edit recall {edited_recall:.3f} ({len(edited)}), "
          f"precision {precision:.3f}, clean false-positive rate {clean_fp_rate:.4f} ({len(clean)} clean)\n"
          f"light-edit recall per benchmark: {per_benchmark}")  # fmt: skip
    assert exact_recall == 1.0
    assert exact <= exact_hits
    assert edited_recall >= 0.9
    assert precision >= 0.95
    assert clean_fp_rate <= 0.01


def test_near_matches_are_verified_by_exact_jaccard():
    toy = {"toy": ["a red cube on top of a blue wooden table", "a photo of a cat"]}
    index = ContaminationIndex(toy, threshold=0.7)
    texts = [
        "A red cube on top of a blue wooden table.",  # exact after normalisation
        "a red cube on top of a blue table",  # one word dropped: 8 of 9 distinct words
        "a green cube on top of a blue wooden table",  # one word replaced: 8 shared of 10 distinct words
        "a red ball under a green table",  # different
        "a red cube on top of a blue table",  # duplicate: reported at both indices
    ]
    report = index.check(texts)
    found = report.per_benchmark["toy"]
    assert [m.index for m in found.exact] == [0]
    assert [(m.index, m.similarity) for m in found.near] == [(1, 0.8889), (2, 0.8), (4, 0.8889)]
    for m in found.near:
        words = shingles(normalize_text(m.text)), shingles(normalize_text(m.benchmark_prompt))
        assert m.similarity == round(jaccard(*words), 4)
    assert report.flagged == {0, 1, 2, 4}
    assert report.counts() == {"toy": {"exact": 1, "near": 3}}
    strict = ContaminationIndex(toy, threshold=0.85).check(texts)
    assert [m.index for m in strict.per_benchmark["toy"].near] == [1, 4]


def test_shingles_and_char_index():
    assert shingles("a red a cube") == {"a", "red", "cube"}
    assert shingles("a red cube", "word", 2) == {"a red", "red cube"}
    assert shingles("a red", "word", 3) == {"a red"} and shingles("", "word", 2) == set()
    assert shingles("abcd", "char", 3) == {"abc", "bcd"} and shingles("ab", "char", 3) == {"ab"}
    index = ContaminationIndex({"toy": ["a photo of a wooden bench"]}, shingle_kind="char", ngram=3)
    assert index.check(["a photo of a wooden benches", "a red cat"]).flagged == {0}


def test_index_rejects_bad_settings():
    with pytest.raises(ValueError, match="threshold"):
        ContaminationIndex({"toy": ["a cat"]}, threshold=0)
    with pytest.raises(ValueError, match="no benchmark prompts"):
        ContaminationIndex({"toy": ["", "!!"]})
    with pytest.raises(ValueError, match="shingle kind"):
        ContaminationIndex({"toy": ["a cat"]}, shingle_kind="byte")
    assert _lsh_rows(0.7, 256) == 6  # 42 bands of 6: a pair at J=0.7 becomes a candidate with p > 0.99


# --------------------------------------------------------------------------------------------------------------------
# Prompt files


def test_read_prompt_file_formats(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n  second prompt  \n\n", encoding="utf-8")
    assert read_prompt_file(tmp_path / "p.txt") == ["first prompt", "second prompt"]

    rows = ['"just a string"', '{"caption": "a caption"}', "", '{"Prompt": "upper-case field", "id": 3}',
            '{"instruction": "make it red", "text": "ignored: instruction is preferred"}']  # fmt: skip
    (tmp_path / "p.jsonl").write_text("\n".join(rows), encoding="utf-8")
    assert read_prompt_file(tmp_path / "p.jsonl") == ["just a string", "a caption", "upper-case field", "make it red"]

    (tmp_path / "list.json").write_text(json.dumps(["one", "two", " "]))
    assert read_prompt_file(tmp_path / "list.json") == ["one", "two"]
    (tmp_path / "records.json").write_text(json.dumps([{"prompt": "p1"}, {"text": "p2"}]))
    assert read_prompt_file(tmp_path / "records.json") == ["p1", "p2"]
    (tmp_path / "by_id.json").write_text(json.dumps({"a-1": {"Prompt": "p1"}, "a-2": {"Prompt": "p2"}}))
    assert read_prompt_file(tmp_path / "by_id.json") == ["p1", "p2"]

    (tmp_path / "p.csv").write_text('id,Caption\n1,"a cat,\nsitting"\n2,a dog\n', encoding="utf-8-sig")  # BOM
    assert read_prompt_file(tmp_path / "p.csv") == ["a cat,\nsitting", "a dog"]
    (tmp_path / "en.csv").write_text("index,prompt_en\n0,hello\n")
    assert read_prompt_file(tmp_path / "en.csv") == ["hello"]


BAD_FILES = {
    "missing.txt": (None, "no such file"),
    "notes.md": (b"a prompt\n", "unsupported file type"),
    "latin1.txt": ("caf\u00e9 au lait\n".encode("latin-1"), "not UTF-8"),
    "nofield.jsonl": (b'{"prompt": "ok"}\n{"label": 3}\n', "line 2: no prompt field"),
    "broken.json": (b'["a", "b"', "invalid JSON"),
    "nocolumn.csv": (b"id,label\n1,x\n", "no prompt column"),
    "number.json": (b'[{"prompt": 5}]', "not a string"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_read_prompt_file_bad_input_names_file_and_problem(tmp_path, name):
    content, problem = BAD_FILES[name]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        read_prompt_file(tmp_path / name)
    message = str(err.value)
    assert str(tmp_path / name) in message and problem in message and "\n" not in message


# --------------------------------------------------------------------------------------------------------------------
# Command line


def deepgen(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "deepgen.cli", "check-contamination", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_cli_json_flags_seeded_prompts(tmp_path, benchmarks):
    rng = random.Random(1)
    texts, truth = seeded_corpus(benchmarks, rng, per_benchmark=3, n_clean=200)
    half = len(texts) // 2
    (tmp_path / "a.txt").write_text("\n".join(" ".join(t.split()) for t in texts[:half]), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"caption": t}) for t in texts[half:]), encoding="utf-8")

    result = deepgen(str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"), "--json")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert set(out["per_benchmark"]) == set(BENCHMARKS)
    assert sum(c["exact"] for c in out["per_benchmark"].values()) >= sum(k == "exact" for k, _ in truth.values())
    assert len(truth) * 0.9 <= out["total_flagged"] <= len(truth) + 10
    example = out["examples"][0]
    assert {"benchmark", "match", "similarity", "text", "benchmark_prompt", "file", "item"} <= set(example)
    assert example["file"].endswith(("a.txt", "b.jsonl"))


def test_cli_clean_file_exits_zero_with_summary(tmp_path):
    rng = random.Random(2)
    (tmp_path / "clean.csv").write_text("caption\n" + "\n".join(clean_caption(rng) for _ in range(100)) + "\n")
    geneval = tmp_path / "bench" / "geneval"
    geneval.mkdir(parents=True)
    geneval.joinpath("evaluation_metadata.jsonl").write_bytes(
        (BENCHDATA_DIR / "geneval" / "evaluation_metadata.jsonl").read_bytes()
    )
    result = deepgen(str(tmp_path / "clean.csv"), "--benchmarks", str(tmp_path / "bench"), "--threshold", "0.8")
    assert result.returncode == 0, result.stderr
    assert "geneval" in result.stdout and "dpg_bench" not in result.stdout
    assert "flagged 0 of 100 texts" in result.stdout


@pytest.mark.parametrize(
    "args, problem",
    [
        (["{tmp}/missing.txt"], "missing.txt: no such file"),
        (["{tmp}/bad.txt"], "bad.txt: not UTF-8"),
        (["{tmp}/ok.txt", "--threshold", "1.5"], "--threshold must be in (0, 1]"),
        (["{tmp}/ok.txt", "--benchmarks", "{tmp}"], "no benchmark prompt files"),
    ],
)
def test_cli_bad_input_exits_two_with_one_line(tmp_path, args, problem):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad bytes\n")
    (tmp_path / "ok.txt").write_text("a cat\n")
    result = deepgen(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and "Traceback" not in result.stderr
