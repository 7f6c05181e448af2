"""A VLM judge behind an OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp's server, hosted APIs) that answers
questions about images: yes/no checks (checklists, edits) and small integer ratings (WISE).

The same wire format as the RL `judge` reward (deepgen.rl.rewards.judge): images go as base64 PNG data URLs, the key
is read from an environment variable per request and never logged. A request that fails (HTTP error, timeout, an
answer that cannot be read) is retried, then raises: the scorer marks that image as failed, never as "no".
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from deepgen.data.shards import png_bytes

log = logging.getLogger(__name__)
_YES_NO = re.compile(r"^\W*(?:answer\W*)?(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeConfig:
    """`url`: the API base ending in /v1 (None: no judge, judge-scored suites report "not scored"); `model`;
    `api_key_env`: the environment variable holding the key; `timeout_s` per request; `workers`: concurrent
    requests; `retries` after a failed request."""

    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 60.0
    workers: int = 4
    retries: int = 2

    @classmethod
    def from_dict(cls, raw: dict) -> JudgeConfig:
        known = {"url", "model", "api_key_env", "timeout_s", "workers", "retries"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"judge: unknown key(s) {unknown} (known: {sorted(known)})")
        config = cls(**raw)
        if config.url and not config.model:
            raise ValueError(f"judge: url {config.url} is set but model is not")
        return config

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def fingerprint(self) -> dict:
        """What names the judge in cache keys: endpoint and model, never the key."""
        return {"url": self.url, "model": self.model}


class VLMJudge:
    def __init__(self, config: JudgeConfig) -> None:
        if config.api_key_env and not os.environ.get(config.api_key_env):
            raise ValueError(f"judge: environment variable {config.api_key_env} (api_key_env) is not set")
        self.config = config
        self._endpoint = config.url.rstrip("/") + "/chat/completions"

    def ask(self, text: str, images: Sequence[Image.Image], parse: Callable[[str], object], max_tokens: int = 16):
        """The parsed answer to one question about `images`; raises after `retries` more failed tries."""
        error: Exception | None = None
        for _ in range(self.config.retries + 1):
            try:
                return parse(self._chat(text, images, max_tokens))
            except (OSError, ValueError, RuntimeError) as e:  # urllib's errors are OSErrors
                error = e
        raise RuntimeError(f"judge: no usable answer after {self.config.retries + 1} tries ({error})")

    def yes(self, question: str, images: Sequence[Image.Image]) -> bool:
        return self.ask(f"{question} Answer with one word: yes or no.", images, yes_no)

    def _chat(self, text: str, images: Sequence[Image.Image], max_tokens: int) -> str:
        content = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                               + base64.b64encode(png_bytes(image.convert("RGB"))).decode()}}
            for image in images]
        body = {"model": self.config.model, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": content}]}
        headers = {"Content-Type": "application/json"}
        if self.config.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.config.api_key_env]}"
        request = urllib.request.Request(self._endpoint, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"] or ""
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"HTTP {e.code} from {self._endpoint}") from None
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed response from {self._endpoint} ({type(e).__name__})") from None


def yes_no(answer: str) -> bool:
    found = _YES_NO.match(answer)
    if found is None:
        raise ValueError(f"unreadable answer {answer[:40]!r} (want yes or no)")
    return found.group(1).lower() == "yes"


_warned: set[str] = set()


def answer_all(judge: VLMJudge, questions: list[list[Callable[[], object]]], label: str) -> list[list | None]:
    """Per image a list of questions (each a call to the judge), all asked on the judge's worker threads; per image
    the answers in order, or None when any of its questions failed (one warning per label)."""
    flat = [(i, ask) for i, asks in enumerate(questions) for ask in asks]

    def run(ask):
        try:
            return True, ask()
        except RuntimeError as e:
            if label not in _warned:
                _warned.add(label)
                log.warning("%s: an image could not be judged (%s); it counts as failed, not as 0", label, e)
            return False, None

    with ThreadPoolExecutor(max_workers=judge.config.workers) as pool:
        answers = list(pool.map(run, [ask for _, ask in flat]))
    out: list[list | None] = [[] for _ in questions]
    for (i, _), (ok, value) in zip(flat, answers):
        if out[i] is not None:
            out[i] = out[i] + [value] if ok else None
    return out
