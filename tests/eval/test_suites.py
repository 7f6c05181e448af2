"""Evaluation suites on a real tiny checkpoint, with real Ray actors generating: every public suite loads, generates a
small subset and reports scores or why it is not scored; the OCR suite is scored by the real OCR engine; the
judge-scored suites against a local OpenAI-compatible judge server; GenEval with a small detector saved like a real
one; the report, metrics and image tables in MLflow (SQLite); resume and reuse of finished work."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from deepgen import storage, world
from deepgen.eval.suites import (SUITES, Prompt, SuiteContext, SuitePlan, Workers, build_suite, evaluate_state,
                                 evaluate_states,
                                 log_report, run_suite, run_suites)
from deepgen.eval.suites.geneval import TASKS, geneval_correct, relative_position
from deepgen.registry.gate import flatten
from deepgen.world.scene import ObjectSpec, SceneSpec

PUBLIC = ("geneval", "dpg_bench", "wise", "t2i_corebench", "unigenbench", "ocr")
SMALL = {"subset": 2, "chunk_size": 1, "steps": 2, "batch_size": 2, "report_prompts": 2, "table_rows": 4}
WORKERS = Workers(num_workers=2, num_cpus=1, num_gpus=0, torch_threads=1)


@pytest.fixture(scope="module")
def edit_folder(tmp_path_factory) -> str:
    """Your own images: two in a `recolor/` subfolder, one at the top, each with its instruction beside it."""
    root = tmp_path_factory.mktemp("edits")
    (root / "recolor").mkdir()
    scenes = {"recolor/circle": ("red", "circle", "make the red circle blue"),
              "recolor/square": ("green", "square", "make the green square yellow"),
              "triangle": ("blue", "triangle", "remove the blue triangle")}
    for name, (colour, shape, instruction) in scenes.items():
        world.render(SceneSpec((ObjectSpec(colour, shape, (1, 1)),))).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(instruction + "\n")
    return str(root)


@pytest.fixture(scope="module")
def generated(tiny_checkpoints, edit_folder, tmp_path_factory):
    """Every public suite (2 prompts each) and the edit suite (3 images), generated once by one pool of Ray actors."""
    torch.set_num_threads(1)
    cache = str(tmp_path_factory.mktemp("suite-cache"))
    suites = [build_suite(name, SMALL) for name in PUBLIC] + [build_suite("edit", {**SMALL, "subset": 3},
                                                                          {"folder": edit_folder})]
    return cache, run_suites(suites, tiny_checkpoints[0], cache, WORKERS, label="test")


def test_every_public_suite_generates_and_reports_scores_or_why_not(generated):
    cache, outcomes = generated
    assert set(PUBLIC) <= set(SUITES)
    for name in (*PUBLIC, "edit"):
        outcome, result = outcomes[name], outcomes[name].result
        wanted = 3 if name == "edit" else 2
        assert outcome.generated_chunks == wanted and result["generated"] == wanted
        assert [r["seed"] for r in outcome.records] == list(range(wanted))  # seed + index, whatever the worker
        for record in outcome.records:
            with Image.open(io.BytesIO(storage.read_bytes(record["image"]))) as image:
                assert image.size == (64, 64)  # the tiny model's size; the edit sources are 64 px too
        if name == "ocr":
            assert result["scored"] is True and result["metric"] == "word_accuracy"
            assert 0.0 <= result["word_accuracy"] <= 1.0 and result["word_accuracy.n"] == 2
            assert "word_accuracy.se" in result
            assert sum(c["word_accuracy.n"] for c in result["categories"].values()) == 2
        else:  # no detector, no judge, no question file: not scored, with the reason; never a 0
            assert result["scored"] is False and result["reason"]
            assert set(flatten(result)) <= {"generated", "truncated"}
    # the tiny model takes 48 prompt tokens: long benchmark prompts are cut at a word boundary, and say so
    cut = [r for r in outcomes["t2i_corebench"].records if r.get("truncated")]
    assert cut and all(r["prompt"].startswith(r["prompt_used"]) and r["prompt_used"] for r in cut)
    assert outcomes["t2i_corebench"].result["truncated"] == len(cut)


def test_ocr_scorer_reads_rendered_words():
    suite = build_suite("ocr", SMALL)
    first = suite.load_prompts()[0]
    assert first.meta["text"] in first.text and first.category == f"words_{len(first.meta['text'].split())}"
    frog = Prompt("k", 'a sign that reads "FROG"', "words_1", {"text": "FROG"})
    images = [world.render(SceneSpec(text="FROG")), Image.new("RGB", (64, 64), "white")]
    assert suite.scorer()(images, [frog, frog]) == [{"word_accuracy": 1.0}, {"word_accuracy": 0.0}]


# ---------------------------------------------------------------- judge-scored suites


@contextmanager
def judge_server(answer):
    """An OpenAI-compatible /v1/chat/completions on a free port; `answer(text, images)` -> the reply's content.
    Yields (url, log of {"text", "images": [pixel hashes], "answer"})."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = body["messages"][0]["content"]
            text = next(p["text"] for p in parts if p["type"] == "text")
            images = [_pixels(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
            content = answer(text, images)
            seen.append({"text": text, "images": [_hash(i) for i in images], "answer": content})
            reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def _pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def _hash(pixels: np.ndarray) -> str:
    return hashlib.sha256(pixels.tobytes()).hexdigest()


def _coin(text: str, images: list[np.ndarray]) -> int:
    return hashlib.sha256(text.encode() + b"".join(i.tobytes() for i in images)).digest()[0]


def mixed_answers(text: str, images: list[np.ndarray]) -> str:
    """Deterministic, varied answers: yes/no or 0-2 ratings from a hash of the question and the images."""
    coin = _coin(text, images)
    if "consistency" in text:
        return f"consistency: {coin % 3}, realism: {(coin // 3) % 3}, aesthetic: {(coin // 9) % 3}"
    return "Yes." if coin % 2 else "no"


def _answer(seen: list[dict], image_hashes: list[str], contains: str) -> str:
    hits = [s["answer"] for s in seen if s["images"] == image_hashes and contains in s["text"]]
    assert len(hits) == 1, (contains, len(hits))
    return hits[0]


def _image_hash(record: dict) -> str:
    return _hash(np.asarray(Image.open(io.BytesIO(storage.read_bytes(record["image"]))).convert("RGB")))


def test_judge_scored_suites_score_what_the_judge_answered(generated, edit_folder, tiny_checkpoints, tmp_path,
                                                          monkeypatch):
    cache, _ = generated
    selected = build_suite("dpg_bench", SMALL).selected()
    csv_path = tmp_path / "dpg_bench.csv"  # DPG-Bench's question-file layout: q2 and q3 depend on q1
    lines = ["item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,"
             "question_natural_language"]
    for p in selected:
        lines += [f"{p.key},x,k,1,0,entity,whole,t,Is there a thing in {p.key}?",
                  f"{p.key},x,k,2,1,attribute,color,t,Is the thing of {p.key} red?",
                  f"{p.key},x,k,3,\"1,2\",relation,spatial,t,Is the red thing of {p.key} on the left?"]
    csv_path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SUITE_JUDGE_KEY", "sk-suite-secret")
    with judge_server(mixed_answers) as (url, seen):
        judge = {"url": url, "model": "tiny-vlm", "api_key_env": "SUITE_JUDGE_KEY", "workers": 4}
        suites = [build_suite(n, SMALL, {"judge": judge}) for n in ("t2i_corebench", "unigenbench", "wise")]
        suites += [build_suite("dpg_bench", {**SMALL, "questions": str(csv_path)}, {"judge": judge}),
                   build_suite("edit", {**SMALL, "subset": 3, "folder": edit_folder}, {"judge": judge})]
        outcomes = run_suites(suites, tiny_checkpoints[0], cache, WORKERS)
    yes = {"Yes.": 1.0, "no": 0.0}
    for name, outcome in outcomes.items():
        assert outcome.generated_chunks == 0, name  # the images generated before are scored, not redrawn
        assert outcome.result["scored"] is True and outcome.result["failed"] == 0
    by_key = {p.key: p for s in suites for p in s.selected()}
    expected: dict[str, list[float]] = {}
    for record in outcomes["t2i_corebench"].records:
        questions = by_key[record["key"]].meta["questions"]
        expected.setdefault("t2i_corebench", []).append(
            sum(yes[_answer(seen, [_image_hash(record)], q)] for q in questions) / len(questions))
    for record in outcomes["unigenbench"].records:
        points = by_key[record["key"]].meta["points"]
        expected.setdefault("unigenbench", []).append(
            sum(yes[_answer(seen, [_image_hash(record)], f"show {d} ({p})")] for p, d in points) / len(points))
    for record in outcomes["wise"].records:
        rated = _answer(seen, [_image_hash(record)], by_key[record["key"]].meta["explanation"])
        c, r, a = (int(part.split(": ")[1]) for part in rated.split(", "))
        expected.setdefault("wise", []).append((0.7 * c + 0.2 * r + 0.1 * a) / 2)
    for record in outcomes["dpg_bench"].records:
        h, key = [_image_hash(record)], record["key"]
        q1, q2, q3 = (yes[_answer(seen, h, f"{key}?")], yes[_answer(seen, h, f"of {key} red?")],
                      yes[_answer(seen, h, f"of {key} on the left?")])
        expected.setdefault("dpg_bench", []).append((q1 + q1 * q2 + q1 * q2 * q3) / 3)  # a no parent fails the child
    for record in outcomes["edit"].records:
        source = np.asarray(Image.open(by_key[record["key"]].meta["source_path"]).convert("RGB"))
        h = [_hash(source), _image_hash(record)]
        followed, preserved = yes[_answer(seen, h, "carry out")], yes[_answer(seen, h, "unchanged")]
        expected.setdefault("edit", []).append(followed * preserved)
    metric = {"t2i_corebench": "score", "unigenbench": "score", "wise": "wiscore", "dpg_bench": "score", "edit": "both"}
    for name, values in expected.items():
        result = outcomes[name].result
        assert result[metric[name]] == pytest.approx(sum(values) / len(values)), name
        assert result[f"{metric[name]}.n"] == len(values) and f"{metric[name]}.se" in result
    assert set(outcomes["edit"].result["categories"]) == {"recolor", "all"}
    assert {"entity", "attribute", "relation"} <= set(outcomes["dpg_bench"].result)
    assert "sk-suite-secret" not in json.dumps([o.result for o in outcomes.values()])


def test_unreadable_judge_answers_fail_images_not_score_them(generated, tiny_checkpoints):
    cache, _ = generated
    with judge_server(lambda text, images: "Both look fine to me.") as (url, seen):
        suite = build_suite("t2i_corebench", SMALL, {"judge": {"url": url, "model": "m", "retries": 0}})
        outcome = run_suite(suite, tiny_checkpoints[0], cache, WORKERS)
        assert outcome.result["failed"] == 2 and "score" not in outcome.result  # failed, not 0
        again = run_suite(suite, tiny_checkpoints[0], cache, WORKERS)
    assert not again.cached and again.scored_chunks == 2  # a result with failures is retried, not reused


# ---------------------------------------------------------------- GenEval


def test_geneval_rules():
    bench, dog = [40, 40, 60, 60], [0, 40, 20, 60]
    assert relative_position(dog, bench) == {"left of"} and relative_position(bench, dog) == {"right of"}
    assert relative_position([40, 0, 60, 20], bench) == {"above"}
    assert relative_position(bench, [42, 42, 58, 58]) == set()  # overlapping centres: no relation
    position = {"include": [{"class": "bench", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    assert geneval_correct(position, {"bench": [bench], "dog": [dog]})
    assert not geneval_correct(position, {"bench": [dog], "dog": [bench]})
    assert not geneval_correct(position, {"dog": [dog]})  # no target to be left of
    counting = {"include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}]}
    assert geneval_correct(counting, {"dog": [dog, bench]})
    assert not geneval_correct(counting, {"dog": [dog]}) and not geneval_correct(counting, {"dog": [dog] * 3})
    colour = {"include": [{"class": "dog", "count": 1, "color": "red"}]}
    assert geneval_correct(colour, {"dog": [dog]}, lambda box, name: "red")
    assert not geneval_correct(colour, {"dog": [dog]}, lambda box, name: "blue")


def test_geneval_overall_is_the_mean_over_its_six_tasks():
    suite = build_suite("geneval", {**SMALL, "subset": 6})
    prompts = suite.selected()
    assert {p.category for p in prompts} == set(TASKS)  # round-robin: one prompt per task
    rows = [(p, {"accuracy": float(i % 2)}) for i, p in enumerate(prompts)]
    out = suite.summarize(rows)
    assert out["overall"] == pytest.approx(0.5) and out["overall.n"] == 6
    partial = suite.summarize(rows[:4])
    assert "overall" not in partial and partial["not_scored_tasks"]


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> str:
    """A tiny random DETR whose labels are GenEval's classes, saved like a real one; its class bias makes every query
    a confident "bench" (a detector that sees a bench everywhere), so the rules' outcome is known."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    from transformers.models.detr import DetrImageProcessorPil

    names = sorted({item["class"] for p in build_suite("geneval", {}).load_prompts()
                    for item in p.meta["include"] + p.meta["exclude"]})
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], out_features=["stage4"])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=16,
                        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=4,
                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    model = DetrForObjectDetection(config)
    with torch.no_grad():
        model.class_labels_classifier.bias[names.index("bench")] = 30.0
    path = tmp_path_factory.mktemp("detr")
    model.save_pretrained(path)
    DetrImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(path)
    return str(path)


def test_geneval_scored_with_a_detector(generated, detector_dir, tiny_checkpoints):
    cache, _ = generated
    suite = build_suite("geneval", {**SMALL, "detector": {"path": detector_dir}})
    assert [p.text for p in suite.selected()] == ["a photo of a bench", "a photo of a bench and a sports ball"]
    outcome = run_suite(suite, tiny_checkpoints[0], cache, WORKERS)
    result = outcome.result
    assert outcome.generated_chunks == 0 and result["scored"] is True
    assert result["categories"]["single_object"]["accuracy"] == 1.0  # four benches: at least one asked
    assert result["categories"]["two_object"]["accuracy"] == 0.0  # benches, but no sports ball
    assert result["accuracy"] == 0.5 and result["accuracy.n"] == 2
    assert "overall" not in result  # two of six tasks: GenEval's overall needs all six


# ---------------------------------------------------------------- resume, reuse, MLflow


def test_resume_regenerates_only_what_is_missing(generated, tiny_checkpoints):
    cache, first = generated
    suite = build_suite("ocr", SMALL)
    outcome = first["ocr"]
    root = str(Path(outcome.result["images"]).parent)
    reused = run_suite(suite, tiny_checkpoints[0], cache, WORKERS)
    assert reused.cached and reused.generated_chunks == 0 and reused.result == outcome.result
    # an interruption after chunk 0: chunk 1's JSON, its scores and the result were never written
    kept = os.stat(f"{root}/chunks/00000.json").st_mtime_ns
    image = storage.read_bytes(outcome.records[1]["image"])
    for name in ("chunks/00001.json", f"result-{outcome.result['key']}.json"):
        os.remove(f"{root}/{name}")
    os.remove(f"{root}/scores-{outcome.result['key']}/00001.json")
    resumed = run_suite(suite, tiny_checkpoints[0], cache, WORKERS)
    assert (resumed.generated_chunks, resumed.scored_chunks, resumed.cached) == (1, 1, False)
    assert os.stat(f"{root}/chunks/00000.json").st_mtime_ns == kept
    assert storage.read_bytes(resumed.records[1]["image"]) == image  # same seed, same image
    assert resumed.result == outcome.result


def test_state_schema_metrics_tables_and_report_in_mlflow(generated, tiny_checkpoints, small_shards, tmp_path):
    cache, _ = generated
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("suites", (tmp_path / "artifacts").as_uri()))
    tracking = {"uri": uri, "run_id": run.info.run_id}
    plan = SuitePlan.from_params({"shapes": {}, "ocr": {}, "wise": {}}, SMALL, {"num_workers": 2})
    shapes = {"per_category": 1, "per_category_overrides": {c: 1 for c in world.KINDS["edit"]}, "steps": 1,
              "guidance": 3.5, "batch_size": 16, "seed": 0, "grid_size": 4}
    context = SuiteContext(small_shards[0]["heldout_urls"], shapes, cache, tracking)
    scores = evaluate_state(plan, "sft", tiny_checkpoints[0], context)
    assert "overall" in scores and "single_object" in scores  # ShapesBench flat, as before
    # ShapesBench alone (the default) gives the flat dict it always gave, the same numbers drawn afresh
    alone = SuitePlan.from_params({"shapes": {}}, SMALL)
    fresh = evaluate_state(alone, "sft", tiny_checkpoints[0],
                           SuiteContext(context.heldout_urls, shapes, str(tmp_path / "fresh"), None))
    assert fresh == {k: v for k, v in scores.items() if k != "suites"}
    assert set(scores["suites"]) == {"ocr", "wise"} and scores["suites"]["wise"]["scored"] is False
    log_report({"sft": scores}, plan, tracking)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["eval/sft/suites/ocr/word_accuracy"] == scores["suites"]["ocr"]["word_accuracy"]
    assert metrics["eval/sft/suites/ocr/word_accuracy.n"] == 2
    assert any(k.startswith("eval/sft/suites/ocr/categories/") for k in metrics)
    assert "eval/sft/overall" in metrics
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "evaluation/sft/ocr_images.json",
                                                      str(tmp_path))).read_text())
    assert table["columns"][:5] == ["prompt", "category", "sample", "seed", "image"] and len(table["data"]) == 2
    assert table["data"][0][4]["type"] == "image"
    page = Path(client.download_artifacts(run.info.run_id, "evaluation/report.html", str(tmp_path))).read_text()
    assert "word_accuracy" in page and "Not scored" in page and "no judge endpoint" in page
    assert page.count("<img") >= 4  # two prompts per suite, drawn by the one state


def test_configuration_errors_name_the_culprit(edit_folder, tmp_path, monkeypatch):
    cases = [(lambda: build_suite("nope", {}), "unknown suite 'nope'"),
             (lambda: build_suite("ocr", {"stpes": 3}), "suites.ocr: unknown key"),
             (lambda: build_suite("ocr", {"steps": "ten"}), "suites.ocr: steps: expected an integer"),
             (lambda: build_suite("ocr", {"judge": {"url": "http://x/v1", "model": "m"}}), "takes no judge"),
             (lambda: build_suite("shapes", {"steps": 3}), "suites.shapes: ShapesBench takes its settings"),
             (lambda: SuitePlan.from_params({"ocr": {}}), "'shapes' (ShapesBench) is required"),
             (lambda: build_suite("wise", {}, {"judge": {"url": "http://x/v1"}}), "model is not"),
             (lambda: build_suite("geneval", {"detector": {"path": str(tmp_path)}}).scorer(), "not a model folder"),
             # the plan checks prompts and scorers at once, before any state is evaluated
             (lambda: SuitePlan.from_params({"shapes": {}, "edit": {"folder": str(tmp_path / "absent")}}),
              "suites.edit.folder: .* is not a folder"),
             (lambda: SuitePlan.from_params({"shapes": {}, "wise": {}}, {"judge": {
                 "url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "SUITE_ABSENT_KEY"}}),
              "SUITE_ABSENT_KEY")]
    (tmp_path / "lonely.png").write_bytes(storage.read_bytes(next(Path(edit_folder).glob("*.png")).as_posix()))
    cases.append((lambda: build_suite("edit", {"folder": str(tmp_path)}).load_prompts(), "has no instruction file"))
    monkeypatch.delenv("SUITE_ABSENT_KEY", raising=False)
    for make, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
            make()
        assert "\n" not in str(error.value)


def test_states_side_by_side_score_as_one_after_another(tiny_checkpoints, small_shards, tmp_path, monkeypatch):
    """The pipeline evaluates its states' ShapesBench in Ray tasks, two at a time: each state's scores, grids,
    metrics and cached rewards are what evaluating it alone in this process gives, relative paths resolving as in
    the driver's folder; a second call finds every state cached."""
    from deepgen.eval.run import evaluate_checkpoint, sample_rewards

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("states", (tmp_path / "artifacts").as_uri()))
    tracking = {"uri": uri, "run_id": run.info.run_id}
    settings = {"per_category": 1, "per_category_overrides": {"edit_recolor": 2}, "steps": 2, "guidance": 3.5,
                "batch_size": 16, "seed": 0, "grid_size": 4}
    heldout = small_shards[0]["heldout_urls"]
    checkpoints = {"alignment": tiny_checkpoints[0], "sft": tiny_checkpoints[1]}
    plan = SuitePlan.from_params({"shapes": {}}, SMALL, {"num_workers": 2, "torch_threads": 1})
    scores = evaluate_states(plan, checkpoints, SuiteContext(heldout, settings, "cache", tracking))
    torch.set_num_threads(1)  # the tasks' thread count, so the reference draws the same floats
    alone = {s: evaluate_checkpoint(s, c, heldout, settings, "alone") for s, c in checkpoints.items()}
    assert scores == alone
    assert all(sample_rewards(s, c, heldout, settings, "cache") == sample_rewards(s, c, heldout, settings, "alone")
               for s, c in checkpoints.items())
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["eval/sft/overall"] == scores["sft"]["overall"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/alignment_samples.png", "evaluation/sft_edits.png"} <= artifacts
    written = {p: p.stat().st_mtime_ns for p in Path("cache").iterdir()}
    assert evaluate_states(plan, checkpoints, SuiteContext(heldout, settings, "cache", None)) == scores
    assert {p: p.stat().st_mtime_ns for p in Path("cache").iterdir()} == written  # read back, nothing redone
