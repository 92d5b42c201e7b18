#!/usr/bin/env bash
# Set up the development environment from nothing: find Python >= 3.12, install uv into
# .tools/ (from PyPI), and sync .venv/ from the committed uv.lock. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    # pyenv keeps other versions out of PATH: take the first 3.12 or 3.13 it has.
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    for candidate in $(ls -d "$root"/versions/3.1[23]* 2>/dev/null | sort -V); do
        if [ -x "$candidate/bin/python3" ]; then
            echo "$candidate/bin/python3"
            return
        fi
    done
    echo "error: Python >= 3.12 not found (set PYTHON=/path/to/python3.12)" >&2
    exit 1
}

PY="$(find_python)"
if [ ! -x .tools/bin/uv ]; then
    echo "bootstrap: installing uv with $PY" >&2
    "$PY" -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
fi
export UV_PYTHON_DOWNLOADS=never
# Byte-compile: job processes import lazily, and PYTHONDONTWRITEBYTECODE may be set.
.tools/bin/uv sync --frozen --quiet --compile-bytecode --python "$PY"
# The package itself is installed editable: byte-compile it too.
.venv/bin/python -m compileall -q src
