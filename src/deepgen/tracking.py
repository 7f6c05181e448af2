"""MLflow helpers shared by the Kedro hook, the Ray workers and the evaluation: one tracking URI, one run per
`kedro run`, metrics batched per log step. Anything that looks like a secret never becomes a param.

A tracking server that goes away must not stop training: metrics, params and images that cannot be delivered are
held in memory (bounded, oldest dropped first), with one warning per outage, and delivered at the next call that
reaches the server or at `flush` (the end of a stage), whose counts say what was held, delivered late and lost.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

_INVALID_KEY_CHARS = re.compile(r"[^\w\-./ ]")  # what MLflow accepts in param names
_SECRET = re.compile(r"(secret|password|token|credential|access_key|api_key)", re.IGNORECASE)
log = logging.getLogger(__name__)
# Records (a metric value, a param or an image) held per run while the server is away: a stage logging 4 metrics
# every 20 steps fills it after 250k steps; a metric record took 288 bytes (tracemalloc, 50k records), so the
# bound is ~15 MB per process.
MAX_HELD = 50_000
PROBE_TIMEOUT_S = 2.0  # a TCP connect before each delivery: mlflow's own retries take minutes on a refused port


def resolve_uri(uri: str, root: str | Path = ".") -> str:
    """Relative SQLite paths become absolute (four slashes), so Ray workers in other folders hit the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = (Path(root) / uri[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def log_metrics(tracking: dict | None, metrics: dict[str, float], step: int) -> None:
    if not tracking or not tracking.get("run_id"):
        return
    now = int(time.time() * 1000)
    _submit(tracking, "metric", [Metric(k, float(v), now, step) for k, v in metrics.items()])


def flat_params(prefix: str, data, out: dict[str, str] | None = None) -> dict[str, str]:
    """Nested config -> {"stage.optim.lr": "0.001"}; keys that look like secrets are dropped, not masked."""
    out = {} if out is None else out
    if isinstance(data, dict):
        for key, value in data.items():
            if _SECRET.search(str(key)):
                continue
            flat_params(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[_INVALID_KEY_CHARS.sub("_", prefix)] = str(data)[:500]  # e.g. keep."*" -> keep._
    return out


def log_params(tracking: dict | None, params: dict[str, str]) -> None:
    if not tracking or not tracking.get("run_id"):
        return
    _submit(tracking, "param", [Param(k, v) for k, v in params.items()])


def log_image(tracking: dict | None, image, artifact_file: str) -> None:
    if tracking and tracking.get("run_id"):
        _submit(tracking, "image", [(image, artifact_file)])


def log_table(tracking: dict | None, data: dict, artifact_file: str) -> None:
    """A table artifact (columns -> values; PIL images become image cells), e.g. an evaluation's prompt/image/score."""
    if tracking and tracking.get("run_id"):
        _submit(tracking, "table", [(data, artifact_file)])


def log_text(tracking: dict | None, text: str, artifact_file: str) -> None:
    """A text artifact (markdown, HTML) a person opens from the run page."""
    if tracking and tracking.get("run_id"):
        _submit(tracking, "text", [(text, artifact_file)])


def flush(tracking: dict | None) -> dict[str, int]:
    """End of a stage: deliver what is held; what still cannot be delivered is lost. Returns this process's counts
    for the run since the last flush: records `buffered` (held after a failed delivery), `flushed` (delivered
    late) and `dropped` (lost), where a record is one metric value, param or image."""
    if not tracking or not tracking.get("run_id"):
        return {"buffered": 0, "flushed": 0, "dropped": 0}
    box = _OUTBOXES.pop((tracking["uri"], tracking["run_id"]), None) or _Outbox()
    if box.pending:
        _drain(tracking, box)
    for record in box.pending:
        box.buffered += not record[2]
    box.dropped += len(box.pending)
    if box.pending:
        log.warning("MLflow at %s: %d metric values, params or images could not be delivered and are lost",
                    tracking["uri"], len(box.pending))
    return {"buffered": box.buffered, "flushed": box.flushed, "dropped": box.dropped}


@dataclass
class _Outbox:
    """What this process could not deliver to one run yet: records [kind, payload, counted as buffered]."""

    pending: deque = field(default_factory=deque)
    buffered: int = 0
    flushed: int = 0
    dropped: int = 0
    down: bool = False  # warned about the current outage


_OUTBOXES: dict[tuple[str, str], _Outbox] = {}


def _submit(tracking: dict, kind: str, payloads: list) -> None:
    box = _OUTBOXES.setdefault((tracking["uri"], tracking["run_id"]), _Outbox())
    box.pending.extend([kind, payload, False] for payload in payloads)
    while len(box.pending) > MAX_HELD:
        box.buffered += not box.pending.popleft()[2]
        box.dropped += 1
    _drain(tracking, box)


def _drain(tracking: dict, box: _Outbox) -> None:
    """Deliver the held records in order, chunk by chunk; on an outage mark them held and warn once per outage."""
    uri, run_id = tracking["uri"], tracking["run_id"]
    client = MlflowClient(uri)
    try:
        if not _reachable(uri):
            raise ConnectionError(f"nothing listens at {uri}")
        while box.pending:
            kind = box.pending[0][0]
            size = {"metric": 1000, "param": 100}.get(kind, 1)  # MLflow's per-request limits
            chunk = []
            while box.pending and box.pending[0][0] == kind and len(chunk) < size:
                chunk.append(box.pending.popleft())
            try:
                _deliver(client, run_id, kind, [record[1] for record in chunk])
            except Exception as exc:
                if _is_outage(exc):
                    box.pending.extendleft(reversed(chunk))
                else:  # a bad record fails loudly once, never again at every later call
                    box.dropped += sum(record[2] for record in chunk)
                raise
            box.flushed += sum(record[2] for record in chunk)
    except Exception as exc:
        if not _is_outage(exc):
            raise
        for record in box.pending:
            if not record[2]:
                record[2] = True
                box.buffered += 1
        if not box.down:
            box.down = True
            log.warning("MLflow at %s is unreachable (%s): holding metrics in memory (up to %d records) and "
                        "retrying at each log call; training goes on", uri, str(exc).splitlines()[0][:200], MAX_HELD)
        return
    if box.down:
        box.down = False
        log.warning("MLflow at %s is reachable again: held records delivered (%d so far)", uri, box.flushed)


def _deliver(client: MlflowClient, run_id: str, kind: str, payloads: list) -> None:
    if kind == "metric":
        client.log_batch(run_id, metrics=payloads, synchronous=True)
    elif kind == "param":  # a param already logged (a resumed stage) must not be logged again
        existing = client.get_run(run_id).data.params
        fresh = [p for p in payloads if p.key not in existing]
        if fresh:
            client.log_batch(run_id, params=fresh, synchronous=True)
    elif kind == "image":
        for image, artifact_file in payloads:
            client.log_image(run_id, image, artifact_file=artifact_file)
    elif kind == "table":
        for data, artifact_file in payloads:
            client.log_table(run_id, data, artifact_file)
    else:
        for text, artifact_file in payloads:
            client.log_text(run_id, text, artifact_file)


def _reachable(uri: str) -> bool:
    """For an HTTP server, whether its port accepts a connection; other stores (SQLite, files) count as reachable."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or requests.utils.get_environ_proxies(uri):
        return True  # through a proxy only the request itself can tell
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _is_outage(exc: Exception) -> bool:
    """Connection failures and server-side errors (5xx) are outages; bad requests and refused credentials are not."""
    if isinstance(exc, (ConnectionError, requests.ConnectionError, requests.Timeout)):
        return True
    return isinstance(exc, MlflowException) and exc.get_http_status_code() >= 500
