#!/usr/bin/env bash
# Sets up a fresh machine for deepgen: Debian packages (tesseract OCR), a venv in .venv, the project and its
# test extras. Idempotent: a second call checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v tesseract >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing tesseract-ocr (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null
  else
    echo "setup: tesseract-ocr is missing; run: sudo apt-get install -y tesseract-ocr" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.deepgen-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing deepgen and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/pip install -q --upgrade pip
  # torch==2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build (see ../shared/STACK.md).
  # --no-compile + compileall on every core: pip byte-compiles on one core (measured here: 188 s -> 62 s + 63 s).
  # A few packages ship files that do not compile (templates, tests); pip skips them too, hence `|| true`.
  .venv/bin/pip install -q --no-compile "torch==2.13.0" -e '.[test]'
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv)"
