#!/usr/bin/env bash
# Run pygeoapi's own process and job tests with this package's manager swapped in.
#
#   scripts/pygeoapi-tests.sh PYGEOAPI_CHECKOUT [--connection VALUE] [PYTEST_ARGS...]
#
# PYGEOAPI_CHECKOUT is a copy of pygeoapi's repository (its `tests/` directory) at the
# version installed in .venv; this script fetches nothing. It copies the checkout's tests to
# a temporary directory, changes `server.manager.name` of their configs to
# pygeoapi_prefect.manager.PrefectManager (and nothing else, except the PostgreSQL
# manager's connection mapping, which names a database this manager has no use for: it
# gets the TinyDB config's connection), and runs, against the installed pygeoapi:
#   tests/api/test_processes.py, tests/manager/test_manager.py and
#   tests/manager/test_postgresql_manager.py::test_job_sync_hello_world.
# --connection replaces every config's `connection` (`null`, an API URL or a path).
# Without PREFECT_API_URL the manager runs its embedded default. The differences it keeps on
# purpose are listed in docs/configuration.md ("Differences from pygeoapi's managers").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

if [ $# -lt 1 ] || [ ! -d "$1/tests/manager" ]; then
    echo "usage: $0 PYGEOAPI_CHECKOUT [--connection VALUE] [PYTEST_ARGS...]" >&2
    echo "  (PYGEOAPI_CHECKOUT: a checkout of geopython/pygeoapi with its tests/)" >&2
    exit 2
fi
CHECKOUT="$(cd "$1" && pwd)"
shift
CONNECTION=""
if [ "${1:-}" = "--connection" ]; then
    CONNECTION="${2:?--connection needs a value}"
    shift 2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$CHECKOUT/tests" "$WORK/tests"
printf '[pytest]\n' >"$WORK/pytest.ini"

"$PYTHON" - "$WORK/tests" "$CONNECTION" <<'EOF'
import re
import sys
from pathlib import Path

import yaml

tests, connection = Path(sys.argv[1]), sys.argv[2]
NAME = "pygeoapi_prefect.manager.PrefectManager"
tinydb = yaml.safe_load((tests / "pygeoapi-test-config.yml").read_text())["server"]["manager"]
for config in ("pygeoapi-test-config.yml", "pygeoapi-test-config-process-metadata.yml",
               "pygeoapi-test-config-postgresql-manager.yml"):
    path = tests / config
    data = yaml.safe_load(path.read_text())
    manager = data["server"]["manager"]
    manager["name"] = NAME
    if isinstance(manager.get("connection"), dict):  # PostgreSQL's database
        manager["connection"] = tinydb["connection"]
    if connection:
        manager["connection"] = yaml.safe_load(connection)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
test_manager = tests / "manager" / "test_manager.py"
source = test_manager.read_text()
source, count = re.subn(r"'name': 'TinyDB'", f"'name': '{NAME}'", source)
assert count == 1, "tests/manager/test_manager.py no longer names the TinyDB manager"
if connection:
    value = yaml.safe_load(connection)
    source = re.sub(r"'connection': '[^']*'", f"'connection': {value!r}", source)
test_manager.write_text(source)
EOF

cd "$WORK"
export PREFECT_HOME="${PREFECT_HOME:-$WORK/prefect-home}"
# A fresh embedded database migrates first: give it time on a loaded machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}"
export PYGEOAPI_CONFIG="$WORK/tests/pygeoapi-test-config.yml"
export PYGEOAPI_OPENAPI="$WORK/tests/pygeoapi-test-openapi.yml"
"$PYTHON" -m pytest -p no:cacheprovider -q "$@" \
    tests/api/test_processes.py \
    tests/manager/test_manager.py \
    "tests/manager/test_postgresql_manager.py::test_job_sync_hello_world"
