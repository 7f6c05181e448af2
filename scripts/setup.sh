#!/usr/bin/env bash
# Sets up a fresh machine for deepgen: a venv in .venv with the project, and for the tests the Debian packages and
# extras they use. Idempotent: a second call checks and returns in seconds.
#   bash scripts/setup.sh         the project alone: what the default `kedro run` needs (lean: it counts in the
#                                 default run's 20-minute budget)
#   bash scripts/setup.sh test    + the extras test, airflow (the DAG tests), dev (kedro-viz) and the Debian packages
#                                 tesseract-ocr (the OCR fallback's test) and postgresql (the tracking-server test)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") extras="" ;;
  test) extras="[test,airflow,dev]" ;;
  *) echo "setup: unknown argument '$1' (expected nothing, or: test)" >&2; exit 2 ;;
esac

if [ -n "$extras" ]; then
  missing=()
  command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing ${missing[*]} (apt)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "setup: missing Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.deepgen-installed
want=$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing deepgen$extras and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/pip install -q --upgrade pip
  # torch==2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build (see ../shared/STACK.md).
  # --no-compile + compileall on every core: pip byte-compiles on one core (measured here: 188 s -> 62 s + 63 s).
  # A few packages ship files that do not compile (templates, tests); pip skips them too, hence `|| true`.
  .venv/bin/pip install -q --no-compile "torch==2.13.0" -e ".$extras"
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv)"
