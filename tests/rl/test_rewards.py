"""Reward plug-ins on real inputs: ShapesWorld renders for `shapes`, rendered words read by the real OCR for `ocr`, a
small random CLIP saved with save_pretrained for `clip`, local HTTP servers for `judge`; and score_group's handling
of rewards that raise, hang or return garbage."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import random
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from deepgen import world
from deepgen.rl.rewards import REWARDS, build_reward, score_group
from deepgen.rl.rewards.ocr import levenshtein, word_accuracy
from deepgen.world.captions import T2I_CATEGORIES
from deepgen.world.scene import ObjectSpec, SceneSpec

# ---------------------------------------------------------------- shapes


def _sample(category: str, spec: SceneSpec, caption: str = "") -> dict:
    return {"category": category, "kind": world.KIND_OF[category], "caption": caption, "spec": spec.to_dict()}


def _prompts(category: str, n: int, seed: int = 0) -> list[tuple[str, SceneSpec]]:
    rng = random.Random(f"rewards-{seed}-{category}")
    return [world.make_prompt(category, rng)[:2] for _ in range(n)]


def _free_cell(spec: SceneSpec) -> tuple[int, int]:
    return next(c for c in world.CELLS if c not in {o.cell for o in spec.objects})


SHAPES = build_reward("shapes")


@pytest.mark.parametrize("category", T2I_CATEGORIES)
def test_shapes_perfect_is_one_empty_is_zero_extra_objects_lower(category):
    for caption, spec in _prompts(category, 6):
        extra = dataclasses.replace(spec, objects=spec.objects + (ObjectSpec("green", "circle", _free_cell(spec)),))
        perfect, empty, with_extra = SHAPES([world.render(s) for s in (spec, SceneSpec(), extra)],
                                            _sample(category, spec, caption))
        assert perfect == 1.0 and empty == 0.0
        assert 0.0 < with_extra < perfect


def test_shapes_one_wrong_attribute_is_partial_credit():
    spec = SceneSpec((ObjectSpec("red", "square", (0, 0)),))
    sample = _sample("single_object", spec, "a red square in the top left")
    variants = [SceneSpec((ObjectSpec("blue", "square", (0, 0)),)),  # colour
                SceneSpec((ObjectSpec("red", "circle", (0, 0)),)),  # shape
                SceneSpec((ObjectSpec("red", "square", (0, 1)),)),  # column (row right)
                SceneSpec((ObjectSpec("red", "square", (1, 1)),))]  # row and column
    colour, shape, column, cell = SHAPES([world.render(s) for s in variants], sample)
    assert colour == shape == pytest.approx(2 / 3)
    assert column == pytest.approx(5 / 6) and cell == pytest.approx(2 / 3)
    # spraying the asked object plus blobs does not beat one wrong attribute
    sprayed = SceneSpec(spec.objects + tuple(ObjectSpec("red", "square", c) for c in [(1, 1), (2, 2)]))
    assert SHAPES([world.render(sprayed)], sample)[0] < colour


def test_shapes_counting_and_position_credit_count_and_relation():
    three = SceneSpec(tuple(ObjectSpec("blue", "triangle", c) for c in [(0, 0), (1, 1), (2, 2)]))
    two = SceneSpec(three.objects[:2])
    counting = _sample("counting", three, "three blue triangles")
    assert SHAPES([world.render(three), world.render(two)], counting) == [1.0, pytest.approx(2 / 3)]
    left = SceneSpec((ObjectSpec("red", "circle", (1, 0)), ObjectSpec("yellow", "square", (1, 2))))
    swapped = SceneSpec((ObjectSpec("red", "circle", (1, 2)), ObjectSpec("yellow", "square", (1, 0))))
    position = _sample("position", left, "a red circle to the left of a yellow square")
    assert SHAPES([world.render(left), world.render(swapped)], position) == [1.0, pytest.approx(2 / 3)]


def test_shapes_refuses_categories_it_cannot_grade():
    text = _sample("text_word", SceneSpec(text="CAT"), 'the word "CAT"')
    with pytest.raises(ValueError, match="text_word"):
        SHAPES([world.render(SceneSpec(text="CAT"))], text)
    assert score_group(SHAPES, [world.render(SceneSpec(text="CAT"))], text, retries=0) is None


# ---------------------------------------------------------------- ocr


def test_ocr_right_word_scores_one_a_wrong_one_less():
    reward = build_reward("ocr")
    sample = _sample("text_word", SceneSpec(text="FROG"), 'the word "FROG"')
    right, one_off, other, blank = reward([world.render(SceneSpec(text=w)) for w in ("FROG", "FROM", "SUN")]
                                          + [Image.new("RGB", (64, 64), "white")], sample)
    assert right == 1.0
    assert one_off == pytest.approx(0.75)  # one substitution in four letters
    assert 0.0 <= other < one_off and blank == 0.0
    # no spec.text: the caption's quoted text is the target, case-insensitively
    quoted = {"category": "text_word", "caption": 'a sign that reads "frog"', "spec": {"objects": []}}
    assert reward([world.render(SceneSpec(text="FROG"))], quoted) == [1.0]


def test_word_accuracy_normalisation():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3
    assert word_accuracy(" c a t\n", "CAT") == 1.0
    assert word_accuracy("CATS", "CAT") == pytest.approx(2 / 3)  # extra text costs, unlike Flow-GRPO's containment
    assert word_accuracy("XXXXXXXX", "CAT") == 0.0  # clipped at 0


def test_ocr_without_a_target_fails_the_group():
    reward = build_reward("ocr")
    with pytest.raises(ValueError, match="no quoted text"):
        reward([world.render(SceneSpec(text="CAT"))], {"key": "k1", "caption": "a cat", "spec": {"objects": []}})


# ---------------------------------------------------------------- clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A random CLIP (hidden 32, 2 layers, 32 px images) with an offline BPE tokenizer, saved like a real one."""
    from deepgen.model.example_weights import write_clip_folder

    return str(write_clip_folder(tmp_path_factory.mktemp("clip")))


def test_clip_cosine_is_finite_bounded_and_deterministic(clip_dir):
    caption, spec = _prompts("single_object", 1)[0]
    images = [world.render(spec), world.render(SceneSpec()), world.render(SceneSpec(text="CAT"))]
    sample = _sample("single_object", spec, caption)
    first = score_group(build_reward("clip", path=clip_dir), images, sample, retries=0)
    again = build_reward("clip", path=clip_dir)(images, sample)
    assert first is not None and all(-1.0 <= v <= 1.0 for v in first)
    assert first == again  # same folder, same images: same scores
    assert len(set(first)) == 3  # the images differ, so do their embeddings


def test_clip_needs_a_model_folder(tmp_path):
    with pytest.raises(ValueError, match="not a CLIP model folder"):
        build_reward("clip", path=str(tmp_path))


# ---------------------------------------------------------------- judge


def _red_pixels(data_url: str) -> int:
    png = base64.b64decode(data_url.split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)).sum())


@contextmanager
def judge_server(answer, delay_s: float = 0.0):
    """An OpenAI-compatible /v1/chat/completions on a free port; `answer(body, headers)` -> the reply's bytes."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            time.sleep(delay_s)
            reply = answer(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            try:
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up, as it should
                pass

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def _chat(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


def prefers_red(body: dict) -> bytes:
    first, second = [part["image_url"]["url"] for part in body["messages"][0]["content"]
                     if part["type"] == "image_url"]
    return _chat("A" if _red_pixels(first) > _red_pixels(second) else "B.")


def _reds(n: int) -> list[Image.Image]:
    """Image k holds k red squares (k = 0..n-1): a strict order by red pixels."""
    return [world.render(SceneSpec(tuple(ObjectSpec("red", "square", c) for c in world.CELLS[:k])))
            for k in range(n)]


def test_judge_win_rate_over_all_pairs(monkeypatch, caplog):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-secret")
    with judge_server(prefers_red) as (url, seen), caplog.at_level(logging.DEBUG):
        reward = build_reward("judge", url=url, model="tiny-vlm", api_key_env="JUDGE_TEST_KEY")
        scores = score_group(reward, _reds(4), {"caption": "red squares"})
    assert scores == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    assert len(seen) == 6  # all pairs of 4
    assert {s["path"] for s in seen} == {"/v1/chat/completions"}
    assert {s["auth"] for s in seen} == {"Bearer sk-test-secret"} and {s["body"]["model"] for s in seen} == {"tiny-vlm"}
    assert "red squares" in seen[0]["body"]["messages"][0]["content"][0]["text"]
    assert "sk-test-secret" not in caplog.text


def test_judge_random_pairs_per_image_when_the_group_is_large():
    with judge_server(prefers_red) as (url, seen):
        scores = build_reward("judge", url=url, model="m", pairs_per_image=1, seed=3)(_reds(6), {"caption": "red"})
    assert 3 <= len(seen) < 15  # at least one comparison per image, fewer than all 15 pairs
    assert scores[0] == 0.0 and scores[-1] == 1.0  # least red loses every comparison, most red wins every one


def test_judge_missing_key_variable_is_refused(monkeypatch):
    monkeypatch.delenv("JUDGE_ABSENT_KEY", raising=False)
    with pytest.raises(ValueError, match="JUDGE_ABSENT_KEY"):
        build_reward("judge", url="http://127.0.0.1:9/v1", model="m", api_key_env="JUDGE_ABSENT_KEY")


@pytest.mark.parametrize("reply", [_chat("Both look fine to me."), b"not json", json.dumps({"choices": []}).encode()])
def test_judge_garbage_answers_fail_the_group_after_retries(reply):
    with judge_server(lambda body: reply) as (url, seen):
        reward = build_reward("judge", url=url, model="m")
        assert score_group(reward, _reds(2), {"caption": "red"}, retries=2) is None
    assert len(seen) == 3  # one pair, tried three times


def test_judge_timeout_fails_the_group_after_retries():
    with judge_server(prefers_red, delay_s=1.0) as (url, seen):
        reward = build_reward("judge", url=url, model="m", timeout_s=0.1)
        assert score_group(reward, _reds(2), {"caption": "red"}, retries=1) is None


# ---------------------------------------------------------------- score_group and the registry


class Scripted:
    """A reward that plays back one behaviour per call (a value to return or an exception to raise)."""

    bounds = (0.0, 1.0)

    def __init__(self, name: str, *script) -> None:
        self.name, self.script, self.calls = name, list(script), 0

    def __call__(self, images, sample):
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step()
        return step


IMAGES = [Image.new("RGB", (8, 8))] * 3


@pytest.mark.parametrize("bad", [RuntimeError("reward service down"), [0.5, float("nan"), 0.1], [0.5, 0.5],
                                 [0.5, "high", 0.1], [0.5, 1.5, 0.1], {"a": 1}, [True, False, True]])
def test_score_group_returns_none_after_retries(bad, caplog):
    reward = Scripted(f"bad-{id(bad)}", bad)
    with caplog.at_level(logging.WARNING, logger="deepgen.rl.rewards.base"):
        assert score_group(reward, IMAGES, {}, retries=2) is None
    assert reward.calls == 3
    assert len(caplog.records) == 1  # one warning per failure kind, not per call
    assert reward.name in caplog.records[0].getMessage()


def test_score_group_retries_a_flaky_reward():
    reward = Scripted("flaky", ConnectionError("reset by peer"), np.array([0.0, 0.5, 1.0]))
    assert score_group(reward, IMAGES, {}) == [0.0, 0.5, 1.0]
    assert reward.calls == 2


def test_score_group_times_out_a_hanging_reward():
    reward = Scripted("hangs", lambda: time.sleep(2.0) or [0.1, 0.2, 0.3])
    assert score_group(reward, IMAGES, {}, retries=1, timeout_s=0.05) is None


def test_registry_names_and_unknown_names():
    assert {"shapes", "ocr", "clip", "judge"} <= set(REWARDS)
    assert all(REWARDS[name].name == name for name in REWARDS)
    with pytest.raises(ValueError) as error:
        build_reward("nope")
    message = str(error.value)
    assert "\n" not in message and "'nope'" in message and "clip, judge, ocr, shapes" in message
    with pytest.raises(ValueError, match="shapes.*colour"):
        build_reward("shapes", colour="red")
