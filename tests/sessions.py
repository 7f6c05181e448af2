"""The processes a test's driver started, found by its session (Linux /proc). Ray's actors run in process groups of
their own, so a killpg of the driver's group leaves them running: after one, the train workers went on saving two
more checkpoints for 3 s (measured here). A lost machine loses them all at once; kill_session does that. A rerun
resumes from what Ray Train's controller registered before the kill: registered_checkpoints waits on that."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from deepgen import storage


def session_processes(session: int, name: bytes = b"") -> list[int]:
    """Pids of the live processes in the session whose command line holds name (a zombie waits for its parent)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and os.getsid(int(entry.name)) == session and name in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return pids


def kill_session(session: int) -> None:
    """SIGKILL every process of the session until none is left (one may start while the others die)."""
    while members := session_processes(session):
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def registered_checkpoints(run_uri: str) -> list:
    """The checkpoints Ray Train's controller has registered for a run (a folder or s3:// prefix): what a rerun
    resumes from. Checkpoint folders alone are not enough: CI once killed a run with two saved but none registered."""
    try:
        return json.loads(storage.read_bytes(storage.join(run_uri, "checkpoint_manager_snapshot.json")))[
            "checkpoint_results"]
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or caught mid-write
        return []
