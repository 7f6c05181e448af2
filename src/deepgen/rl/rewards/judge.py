"""`judge`: a pairwise VLM preference judge behind an OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp's
server, hosted APIs); each image's reward is its win rate in its group."""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from deepgen.data.shards import png_bytes
from deepgen.rl.rewards.base import register

QUESTION = ('Which image matches the prompt "{caption}" better: the first (A) or the second (B)? '
            "Answer with one letter, A or B.")
_ANSWER = re.compile(r"^\W*(?:answer\W*)?(?:image\s*)?([AB12])\b", re.IGNORECASE)  # "A", "**B**", "Image 2"


@register("judge")
class JudgeReward:
    """Per image: the share of its comparisons it won. Each comparison is one chat request with both images as base64
    PNG data URLs, answered "A"/"B" (or "1"/"2"); the two are shown in a random (seeded) order, so a judge's
    preference for one position averages out instead of favouring an index.

    Options: `url`, the API base ending in /v1 (requests go to <url>/chat/completions); `model`; `api_key_env`, the
    name of the environment variable holding the key (read per request, sent as a bearer token, never logged);
    `timeout_s` per request; `pairs_per_image`: None compares all G(G-1)/2 pairs, k draws k random opponents per
    image (each image then takes part in at least k comparisons); `workers`, concurrent requests; `seed`.
    An unreadable answer or an HTTP error raises, so score_group retries, then fails the group.
    """

    bounds = (0.0, 1.0)

    def __init__(self, url: str, model: str, api_key_env: str | None = None, timeout_s: float = 30.0,
                 pairs_per_image: int | None = None, workers: int = 8, seed: int = 0) -> None:
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise ValueError(f"judge reward: environment variable {api_key_env} (api_key_env) is not set")
        if pairs_per_image is not None and pairs_per_image < 1:
            raise ValueError(f"judge reward: pairs_per_image must be at least 1 or None, got {pairs_per_image}")
        self._endpoint = url.rstrip("/") + "/chat/completions"
        self._model, self._key_env, self._timeout_s = model, api_key_env, timeout_s
        self._pairs_per_image, self._workers = pairs_per_image, workers
        self._rng = random.Random(seed)

    def __call__(self, images: list[Image.Image], sample: dict) -> list[float]:
        pairs = self._pairs(len(images))
        shown = [(i, j) if self._rng.random() < 0.5 else (j, i) for i, j in pairs]
        urls = [f"data:image/png;base64,{base64.b64encode(png_bytes(image.convert('RGB'))).decode()}"
                for image in images]
        question = QUESTION.format(caption=sample["caption"])
        with ThreadPoolExecutor(max_workers=self._workers) as pool:
            first_wins = list(pool.map(lambda p: self._first_wins(question, urls[p[0]], urls[p[1]]), shown))
        wins, played = [0] * len(images), [0] * len(images)
        for (a, b), a_won in zip(shown, first_wins):
            wins[a if a_won else b] += 1
            played[a] += 1
            played[b] += 1
        return [w / n for w, n in zip(wins, played)]

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        if self._pairs_per_image is None or self._pairs_per_image >= n - 1:
            return list(itertools.combinations(range(n), 2))
        chosen = {tuple(sorted((i, j))) for i in range(n)
                  for j in self._rng.sample([j for j in range(n) if j != i], self._pairs_per_image)}
        return sorted(chosen)

    def _first_wins(self, question: str, first: str, second: str) -> bool:
        body = {"model": self._model, "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": first}},
            {"type": "image_url", "image_url": {"url": second}}]}]}
        headers = {"Content-Type": "application/json"}
        if self._key_env is not None:
            headers["Authorization"] = f"Bearer {os.environ[self._key_env]}"
        request = urllib.request.Request(self._endpoint, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                answer = json.loads(response.read())["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"judge: HTTP {e.code} from {self._endpoint}") from None
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"judge: malformed response from {self._endpoint} ({type(e).__name__})") from None
        found = _ANSWER.match(answer or "")
        if found is None:
            raise ValueError(f"judge: unreadable answer {str(answer)[:40]!r} (want A or B)")
        return found.group(1).upper() in "A1"
