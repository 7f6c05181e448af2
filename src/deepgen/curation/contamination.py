"""Benchmark-contamination check: flag training texts that copy, or nearly copy, public benchmark test prompts.

Why: a model trained on a benchmark's test prompts scores well on that benchmark for the wrong reason (the official
DeepGen code's RL prompt list held a benchmark's test prompts). Every caption, prompt and instruction that goes into
training is therefore checked against the prompt sets of the benchmarks we report (GenEval, DPG-Bench, WISE,
T2I-CoReBench, UniGenBench, the OCR test prompts), which ship with the package in `deepgen.benchdata`.

How, in two tiers:
  * exact: equal after `normalize_text` (NFKC, casefold, no punctuation, single spaces) with the spaces then dropped
    too, a dict lookup (see `exact_key`);
  * near: Jaccard similarity of shingle sets (default: the set of words) at or above a threshold. Candidates come from
    MinHash signatures with LSH banding (only texts that share a band bucket with a benchmark prompt are compared, so
    the cost grows linearly with the number of texts, never all-pairs); every candidate is then verified with the exact
    Jaccard of the two sets, so the MinHash estimate only decides what gets looked at, never what gets flagged.

Pure Python + numpy, no downloads: it has to run in CI and inside the data pipeline, on CPUs.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepgen.benchdata import BENCHDATA_DIR

# --------------------------------------------------------------------------------------------------------------------
# Normalisation and shingles

_APOSTROPHES = re.compile(r"['\u2019\u02bc]")  # dropped, not spaced: "dog's" -> "dogs", "don't" -> "dont"
_NOT_WORD = re.compile(r"[^\w\s]|_")  # punctuation and symbols (Unicode-aware \w) become spaces


def normalize_text(s: str) -> str:
    """Canonical form for matching: Unicode NFKC, casefolded, punctuation and symbols removed, whitespace collapsed.

    Case, typography (curly quotes, full-width letters, ligatures) and punctuation changes must not hide a copied
    prompt, so they are erased before any comparison.
    """
    s = unicodedata.normalize("NFKC", s).casefold()
    s = _APOSTROPHES.sub("", s)
    s = _NOT_WORD.sub(" ", s)
    return " ".join(s.split())


def exact_key(normalized: str) -> str:
    """Key for exact matches: the normalised text without spaces.

    Punctuation may have been deleted ("3.5" -> "35", "red-haired" -> "redhaired") or spaced ("3 5", "red haired") by
    whatever cleaned a copied prompt; both spellings must still be the same prompt.
    """
    return normalized.replace(" ", "")


def shingles(normalized: str, kind: str = "word", n: int = 1) -> set[str]:
    """The set compared by Jaccard: word n-grams (`kind="word"`) or character n-grams (`kind="char"`).

    The default, single words, is the most edit-tolerant choice for short prompts: GenEval prompts have ~7 words, and
    one added, dropped or moved word changes few words but many word bigrams or character shingles. Longer n-grams
    are stricter about word order and are available for callers that prefer precision.
    """
    if kind == "word":
        words = normalized.split()
        if n == 1:
            return set(words)
        return {" ".join(words[i : i + n]) for i in range(max(len(words) - n, 0) + 1)} if words else set()
    if kind == "char":
        return {normalized[i : i + n] for i in range(max(len(normalized) - n, 0) + 1)} if normalized else set()
    raise ValueError(f"unknown shingle kind {kind!r} (expected 'word' or 'char')")


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity |a & b| / |a | b| (0.0 for two empty sets)."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


# --------------------------------------------------------------------------------------------------------------------
# Benchmark loaders: each takes the path of its file (or folder) inside a benchdata directory


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a leading byte-order mark would hide the first field name
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (undecodable byte at offset {e.start})") from None


def load_geneval(path: Path) -> list[str]:
    """GenEval: `evaluation_metadata.jsonl`, one JSON object per line, the text in "prompt"."""
    return [json.loads(line)["prompt"] for line in _read_text(path).splitlines() if line.strip()]


def load_dpg_bench(path: Path) -> list[str]:
    """DPG-Bench: a `prompts/` folder with one prompt per `.txt` file."""
    return [_read_text(p).strip() for p in sorted(path.glob("*.txt"))]


def load_wise(path: Path) -> list[str]:
    """WISE: `merge.json`, a JSON list of objects with the text in "Prompt" (union of the three category files)."""
    return [item["Prompt"] for item in json.loads(_read_text(path))]


def load_t2i_corebench(path: Path) -> list[str]:
    """T2I-CoReBench: a `data/` folder of JSON files, each a dict id -> {"Prompt": ..., "Checklist": ...}."""
    return [rec["Prompt"] for p in sorted(path.glob("*.json")) for rec in json.loads(_read_text(p)).values()]


def load_unigenbench(path: Path) -> list[str]:
    """UniGenBench: `test_prompts_en.csv`, the English prompt in column "prompt_en"."""
    return [row["prompt_en"] for row in csv.DictReader(io.StringIO(_read_text(path), newline=""))]


def load_ocr_prompts(path: Path) -> list[str]:
    """OCR prompts (Flow-GRPO's text-rendering test set): `test.txt`, one prompt per line."""
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


BENCHMARKS: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "geneval": ("geneval/evaluation_metadata.jsonl", load_geneval),
    "dpg_bench": ("dpg_bench/prompts", load_dpg_bench),
    "wise": ("wise/data_verified/merge.json", load_wise),
    "t2i_corebench": ("t2i_corebench/data", load_t2i_corebench),
    "unigenbench": ("unigenbench/data/test_prompts_en.csv", load_unigenbench),
    "ocr_prompts": ("ocr_prompts/test.txt", load_ocr_prompts),
}
"""Benchmark name -> (path inside a benchdata directory, loader)."""


def load_benchmarks(dir: Path | None = None) -> dict[str, list[str]]:
    """Prompts of every benchmark found under `dir` (default: the packaged `BENCHDATA_DIR`), by benchmark name.

    Benchmarks whose file is absent are skipped, so a directory holding only some sets (or a custom one laid out the
    same way) works; a directory holding none of them is an error.
    """
    root = Path(BENCHDATA_DIR if dir is None else dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: benchmark directory not found")
    found = {}
    for name, (rel, load) in BENCHMARKS.items():
        if (root / rel).exists():
            try:
                found[name] = load(root / rel)
            except (KeyError, TypeError, AttributeError, ValueError) as e:  # a malformed file, not a bug here
                raise ValueError(f"{root / rel}: cannot read {name} prompts ({type(e).__name__}: {e})") from None
    if not found:
        expected = ", ".join(rel for rel, _ in BENCHMARKS.values())
        raise FileNotFoundError(f"{root}: no benchmark prompt files found (expected any of: {expected})")
    return found


# --------------------------------------------------------------------------------------------------------------------
# Reading the user's prompt files

PROMPT_FIELDS = ("prompt", "caption", "instruction", "text")
"""Field / column names that hold the text, in order of preference; matched case-insensitively ("Prompt" too), and
for CSV columns also with a suffix such as "prompt_en"."""


def _pick_field(names: Iterable[str]) -> str | None:
    by_lower = {name.casefold(): name for name in names}
    for want in PROMPT_FIELDS:
        if want in by_lower:
            return by_lower[want]
    for want in PROMPT_FIELDS:
        for low, name in by_lower.items():
            if low.startswith(want + "_"):
                return name
    return None


def _prompt_of(item: object, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        key = _pick_field(item)
        if key is not None and isinstance(item[key], str):
            return item[key]
        if key is not None:
            raise ValueError(f"{where}: field {key!r} is not a string")
    expected = ", ".join(PROMPT_FIELDS)
    raise ValueError(f"{where}: no prompt field (expected a string or an object with one of: {expected})")


def read_prompt_file(path: str | Path) -> list[str]:
    """Texts in a user's prompt file, blank ones dropped, in file order.

    Formats: `.txt` one per line; `.jsonl` one string or object per line; `.json` a list of strings or objects (or a
    dict of id -> object, as T2I-CoReBench uses); `.csv` with a header. Objects and CSV headers must have a prompt-like
    field (see `PROMPT_FIELDS`). Problems raise FileNotFoundError / ValueError with the file name in the message, so a
    command line can print them as one line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".json", ".csv"):
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'!r} (expected .txt, .jsonl, .json or .csv)")
    content = _read_text(path)
    if suffix == ".txt":
        texts = content.splitlines()
    elif suffix == ".jsonl":
        texts = []
        for no, line in enumerate(content.splitlines(), 1):
            if line.strip():
                try:
                    texts.append(_prompt_of(json.loads(line), f"{path}: line {no}"))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {no}: invalid JSON ({e.msg})") from None
    elif suffix == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict) and _pick_field(data) is None:
            data = list(data.values())
        elif isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of strings or objects")
        texts = [_prompt_of(item, f"{path}: item {i}") for i, item in enumerate(data)]
    else:
        reader = csv.DictReader(io.StringIO(content, newline=""))  # keeps quoted multi-line fields whole
        column = _pick_field(reader.fieldnames or [])
        if column is None:
            raise ValueError(
                f"{path}: no prompt column (header is {reader.fieldnames}; expected one of: {', '.join(PROMPT_FIELDS)})"
            )
        texts = [row[column] or "" for row in reader]
    return [t.strip() for t in texts if t.strip()]


# --------------------------------------------------------------------------------------------------------------------
# MinHash + LSH


def _lsh_rows(threshold: float, num_perm: int, min_recall: float = 0.99) -> int:
    """Rows per band: the largest r whose banding still catches a pair at exactly `threshold` with `min_recall`.

    A pair with Jaccard J shares at least one of b = num_perm // r bands with probability 1 - (1 - J**r)**b. Larger r
    means fewer chance candidates (less verification work), smaller r means higher recall; recall wins.
    """
    best = 1
    for r in range(1, num_perm + 1):
        if 1.0 - (1.0 - threshold**r) ** (num_perm // r) >= min_recall:
            best = r
    return best


class _MinHasher:
    """MinHash signatures of many shingle sets at once, vectorised with numpy.

    Shingles are hashed with CRC-32 (stable across processes, unlike `hash`), then permuted with multiply-add-shift
    hashes h(x) = (a*x + b mod 2**64) >> 32 with random odd a; the signature is the per-permutation minimum.
    """

    def __init__(self, num_perm: int, seed: int):
        rng = np.random.default_rng(seed)
        top = np.iinfo(np.uint64).max
        self.a = rng.integers(0, top, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
        self.b = rng.integers(0, top, num_perm, dtype=np.uint64, endpoint=True)

    def signatures(self, sets: Sequence[set[str]], chunk: int = 1 << 15) -> np.ndarray:
        """(len(sets), num_perm) uint32 signatures; every set must be non-empty."""
        out = np.empty((len(sets), len(self.a)), dtype=np.uint32)
        start = 0
        while start < len(sets):
            stop, size = start, 0
            while stop < len(sets) and (size == 0 or size + len(sets[stop]) <= chunk):
                size += len(sets[stop])
                stop += 1
            batch = sets[start:stop]
            items = [s for ss in batch for s in ss]
            crc = {s: zlib.crc32(s.encode()) for s in set(items)}  # shingles repeat a lot: hash each once
            flat = np.fromiter(map(crc.__getitem__, items), dtype=np.uint64, count=size)
            offsets = np.cumsum([0] + [len(ss) for ss in batch[:-1]])
            hv = np.multiply.outer(self.a, flat)
            hv += self.b[:, None]
            hv >>= np.uint64(32)
            out[start:stop] = np.minimum.reduceat(hv, offsets, axis=1).T
            start = stop
        return out


def _band_keys(sig: np.ndarray, rows: int, salts: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """(n, bands) uint64 bucket keys: each band's `rows` signature values mixed into one 64-bit word, salted by band."""
    bands = len(salts)
    x = sig[:, : bands * rows].reshape(len(sig), bands, rows).astype(np.uint64)
    return (x * mult).sum(axis=2, dtype=np.uint64) ^ salts


# --------------------------------------------------------------------------------------------------------------------
# Index and report


@dataclass(frozen=True)
class Match:
    """One training text matching one benchmark prompt; `index` is the text's position in the checked input."""

    index: int
    text: str
    benchmark_prompt: str
    similarity: float


@dataclass
class BenchmarkMatches:
    """Matches against one benchmark. A text has at most one exact and, only without it, one near match here."""

    exact: list[Match] = field(default_factory=list)
    near: list[Match] = field(default_factory=list)


@dataclass
class ContaminationReport:
    """Result of `ContaminationIndex.check`: matches per benchmark and the input indices flagged by any of them."""

    per_benchmark: dict[str, BenchmarkMatches]
    flagged: set[int]
    checked: int
    threshold: float

    def counts(self) -> dict[str, dict[str, int]]:
        """{benchmark: {"exact": n, "near": n}} for every indexed benchmark, zeros included."""
        return {name: {"exact": len(m.exact), "near": len(m.near)} for name, m in self.per_benchmark.items()}


class ContaminationIndex:
    """Benchmark prompts indexed for exact and near-duplicate look-up of training texts.

    Build once (`ContaminationIndex()` uses the packaged benchmarks), then `check` any number of text collections.
    `threshold` is the minimum exact Jaccard similarity of shingle sets that counts as a near match; `shingle_kind` and
    `ngram` choose the sets (see `shingles`); `num_perm` and `seed` set up the MinHash signatures.
    """

    chunk = 4096
    """Texts hashed and looked up per numpy batch in `check`: bounded memory, cost linear in the number of texts."""

    def __init__(
        self,
        benchmarks: Mapping[str, Sequence[str]] | None = None,
        threshold: float = 0.7,
        shingle_kind: str = "word",
        ngram: int = 1,
        num_perm: int = 256,
        seed: int = 0,
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        benchmarks = load_benchmarks() if benchmarks is None else benchmarks
        self.threshold = threshold
        self.benchmark_names = list(benchmarks)
        self._shingle = lambda norm: shingles(norm, shingle_kind, ngram)
        self._exact: dict[str, list[int]] = {}  # exact key -> prompt ids
        self._prompts: list[tuple[str, str]] = []  # prompt id -> (benchmark, original prompt)
        self._sets: list[set[str]] = []  # prompt id -> shingle set
        seen: set[tuple[str, str]] = set()
        for name, prompts in benchmarks.items():
            for prompt in prompts:
                norm = normalize_text(prompt)
                if not norm or (name, exact_key(norm)) in seen:  # one entry per distinct prompt per benchmark
                    continue
                seen.add((name, exact_key(norm)))
                self._exact.setdefault(exact_key(norm), []).append(len(self._prompts))
                self._prompts.append((name, prompt))
                self._sets.append(self._shingle(norm))
        if not self._prompts:
            raise ValueError("no benchmark prompts to index")

        self._hasher = _MinHasher(num_perm, seed)
        self._rows = _lsh_rows(threshold, num_perm)
        rng = np.random.default_rng(seed + 1)
        top = np.iinfo(np.uint64).max
        self._salts = rng.integers(0, top, num_perm // self._rows, dtype=np.uint64, endpoint=True)
        self._mult = rng.integers(0, top, self._rows, dtype=np.uint64, endpoint=True) | np.uint64(1)
        keys = _band_keys(self._hasher.signatures(self._sets), self._rows, self._salts, self._mult).ravel()
        order = np.argsort(keys, kind="stable")
        # buckets in CSR form: sorted distinct keys, where each one's entries start in _owner, and how many there are
        self._keys, self._start, self._count = np.unique(keys[order], return_index=True, return_counts=True)
        self._owner = (order // len(self._salts)).astype(np.int64)  # bucket entry -> prompt id

    def __len__(self) -> int:
        return len(self._prompts)

    def _candidates(self, sets: Sequence[set[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(query ids, prompt ids) of distinct pairs sharing at least one LSH bucket."""
        if not sets:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        qkeys = _band_keys(self._hasher.signatures(sets), self._rows, self._salts, self._mult).ravel()
        pos = np.minimum(np.searchsorted(self._keys, qkeys), len(self._keys) - 1)
        hit = np.nonzero(self._keys[pos] == qkeys)[0]
        left, counts = self._start[pos[hit]], self._count[pos[hit]]
        qid = hit // len(self._salts)
        # expand every hit bucket into its entries, without a Python loop
        starts = np.repeat(left - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        pairs = np.unique(np.repeat(qid, counts) * len(self._prompts) + self._owner[starts])
        return pairs // len(self._prompts), pairs % len(self._prompts)

    def check(self, texts: Iterable[str]) -> ContaminationReport:
        """Match every text against every benchmark; see `ContaminationReport`.

        Identical texts (after normalisation) are looked up once and reported at every index where they occur.
        """
        texts = list(texts)
        positions: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            positions.setdefault(normalize_text(text), []).append(i)
        positions.pop("", None)
        uniq = list(positions)

        # best (similarity, prompt id) per (unique text, benchmark); exact matches have similarity 1.0 and win
        best: dict[tuple[int, str], tuple[float, int, bool]] = {}
        for u, norm in enumerate(uniq):
            for pid in self._exact.get(exact_key(norm), ()):
                best.setdefault((u, self._prompts[pid][0]), (1.0, pid, True))
        sets = [self._shingle(norm) for norm in uniq]
        nonempty = [u for u, s in enumerate(sets) if s]
        for lo in range(0, len(nonempty), self.chunk):
            part = nonempty[lo : lo + self.chunk]
            qids, pids = self._candidates([sets[u] for u in part])
            for q, pid in zip(qids.tolist(), pids.tolist()):
                u = part[q]
                key = (u, self._prompts[pid][0])
                prev = best.get(key)
                if prev is not None and prev[2]:
                    continue  # already an exact match for this benchmark
                sim = jaccard(sets[u], self._sets[pid])
                if sim >= self.threshold and (prev is None or sim > prev[0]):
                    best[key] = (sim, pid, False)

        per_benchmark = {name: BenchmarkMatches() for name in self.benchmark_names}
        flagged: set[int] = set()
        for (u, name), (sim, pid, exact) in best.items():
            bucket = per_benchmark[name].exact if exact else per_benchmark[name].near
            for i in positions[uniq[u]]:
                bucket.append(Match(i, texts[i], self._prompts[pid][1], round(sim, 4)))
                flagged.add(i)
        for m in per_benchmark.values():
            m.exact.sort(key=lambda x: x.index)
            m.near.sort(key=lambda x: x.index)
        return ContaminationReport(per_benchmark, flagged, len(texts), self.threshold)
