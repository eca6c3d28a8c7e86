#!/usr/bin/env bash
# Set up the side-by-side benchmark: wrk (Debian package) and a virtualenv in
# bench/.venv holding the peer servers plus arbiter (editable, from the repo root).
# The project itself never depends on anything installed here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update && apt-get install -y wrk
    else
        sudo apt-get update && sudo apt-get install -y wrk
    fi
fi
command -v taskset >/dev/null 2>&1 || { echo "taskset (util-linux) is required" >&2; exit 1; }

if [ ! -x "$here/.venv/bin/python" ]; then
    "$py" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install --quiet --upgrade pip
"$here/.venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
if [ -f "$root/pyproject.toml" ]; then
    "$here/.venv/bin/python" -m pip install --quiet -e "$root"
else
    echo "note: $root/pyproject.toml not found; arbiter is skipped until it exists" >&2
fi
"$here/.venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(arbiter-asgi|uvicorn|gunicorn|granian|hypercorn|fastapi|uvloop|httptools|h11|websockets|psutil) ' || true
echo "ready: $here/.venv/bin/python $here/run.py --smoke"
