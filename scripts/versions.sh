#!/usr/bin/env bash
# Run the execution-path tests against other releases of the dependencies: `floor` (every
# runtime dependency at its declared floor) and `newest` (the newest releases that resolve).
# Each environment is synced from its own committed lock, ci/versions/<name>/uv.lock.
#
#   scripts/versions.sh floor newest    # both (what `make versions` and CI run)
#
# The tests cover every way a job runs: synchronous in the request's thread, asynchronous in
# a job process (direct and in Prefect's flow engine), a BasePrefectProcessor's own flow,
# dismissal, progress, a real `pygeoapi serve` on the embedded default, full conformance
# mode, and deployed processes on a Prefect worker over PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=(
    tests/test_execution.py
    tests/test_direct.py
    tests/test_prefect_processor.py
    tests/test_dismiss.py
    tests/test_progress.py
    tests/test_server.py
    tests/conformance/test_dismiss.py
    tests/test_scale_out.py
)

export UV_PYTHON_DOWNLOADS=never
PY="$(readlink -f .venv/bin/python)"
status=0
for name in "$@"; do
    project="ci/versions/$name"
    [ -f "$project/pyproject.toml" ] || { echo "versions: no $project" >&2; exit 2; }
    .tools/bin/uv sync --locked --quiet --compile-bytecode --project "$project" --python "$PY"
    "$project/.venv/bin/python" -c 'import sys, prefect, pygeoapi, pydantic, fastapi
print(f"versions ({sys.argv[1]}): prefect {prefect.__version__}, pygeoapi {pygeoapi.__version__}, "
      f"pydantic {pydantic.VERSION}, fastapi {fastapi.__version__}")' "$name"
    "$project/.venv/bin/pytest" -q -p no:cacheprovider "${TESTS[@]}" || status=1
done
exit $status
