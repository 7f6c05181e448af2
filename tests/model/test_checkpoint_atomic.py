"""A checkpoint write that fails half way leaves nothing half-written under a checkpoint's name: the disk filling up is
simulated by a file-size limit (RLIMIT_FSIZE), so the kernel itself fails the write part way through a file."""

from __future__ import annotations

import hashlib
import json
import resource
from contextlib import contextmanager
from pathlib import Path

import pytest

from deepgen.model.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint

# the tiny model's files: vlm 2.4 MB, scb 0.3 MB, dit 9.3 MB, vae 0.9 MB. A 4 MB limit lets the VLM and the bridge
# through and stops the DiT part way, as a disk that fills up during a save does.
LIMIT = 4 * 2**20


@contextmanager
def disk_full_after(nbytes: int):
    """Any file this process writes past `nbytes` fails with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint_the_latest(tiny_model, tmp_path):
    run = tmp_path / "run"  # checkpoint_<n> folders side by side, as in a Ray Train run
    previous = save_checkpoint(tiny_model, run / "checkpoint_000000", extra={"step": 4})
    before = snapshot(run)
    for target in (run / "checkpoint_000001", previous):  # a new checkpoint, and one overwritten
        with pytest.raises(Exception, match="File too large"), disk_full_after(LIMIT):  # EFBIG, via safetensors
            save_checkpoint(tiny_model, target, extra={"step": 8})
    # nothing of the failed saves is left (no half folder, no hidden staging folder), the old files are untouched
    assert [p.name for p in run.iterdir()] == ["checkpoint_000000"]
    assert snapshot(run) == before
    latest = max(p.parent for p in run.glob(f"checkpoint_*/{CONFIG_FILE}"))
    assert latest == previous
    assert json.loads((latest / CONFIG_FILE).read_text())["step"] == 4
    load_checkpoint(latest)  # strict: every weight present and of the right shape


def test_a_folder_that_is_not_a_checkpoint_is_never_replaced(tiny_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"refusing to replace {tmp_path}: it holds files"):
        save_checkpoint(tiny_model, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
