"""Cold start on the embedded default: ready when the server first answers, and only then.

`pygeoapi serve` gets its Prefect side ready before it serves: the embedded Prefect API is
up (its database migrated), and the job launcher started, by the time the landing page
first answers. `pygeoapi openapi generate`, which builds the manager too, starts nothing,
and a database already at Prefect's newest migration is not migrated again. (The times
are figures of the benchmark: `python -m benchmarks --cold-start`.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

from pygeoapi_prefect.runtime.embedded_api import database_is_current
from tests.conftest import PYGEOAPI, ROOT, write_config


def _descendants(server: Any) -> list[psutil.Process]:
    assert server.process is not None
    return psutil.Process(server.process.pid).children(recursive=True)


def _embedded_apis(server: Any) -> list[psutil.Process]:
    return [
        process
        for process in _descendants(server)
        if "pygeoapi_prefect.runtime.embedded_api:create_app" in process.cmdline()
    ]


def _launchers(server: Any) -> list[psutil.Process]:
    return [
        process
        for process in _descendants(server)
        if "pygeoapi_prefect.runtime.launcher" in process.cmdline()
    ]


def _is_current(database: Path) -> bool:
    url = f"sqlite+aiosqlite:///{database}"
    with temporary_settings(updates={PREFECT_API_DATABASE_CONNECTION_URL: url}):
        return database_is_current()


def test_openapi_generate_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    config = write_config(tmp_path)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": "", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [PYGEOAPI, "openapi", "generate", str(config), "--output-file", str(tmp_path / "o.yml")],
        check=True,
        capture_output=True,
        env=env,
    )
    assert not (home / "prefect.db").exists()


@pytest.mark.timeout(600)
def test_serve_is_ready_when_it_first_answers(server_factory: Any, tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    env = {"PREFECT_API_URL": "", "PREFECT_HOME": str(home)}
    server = server_factory(env=env)
    server.start(timeout=300)

    # Before any job request: one embedded API (not one more in Flask's reloader
    # process), its database migrated, and the job launcher running.
    apis = _embedded_apis(server)
    assert len(apis) == 1, [p.cmdline() for p in apis]
    assert "PREFECT_API_DATABASE_MIGRATE_ON_START" not in apis[0].environ()
    assert (home / "prefect.db").is_file()
    assert len(_launchers(server)) == 1

    assert _is_current(home / "prefect.db")
    assert not _is_current(tmp_path / "elsewhere.db")

    # A restart on the same database skips Prefect's migrations, and runs jobs.
    server.stop()
    server.start(timeout=300)
    apis = _embedded_apis(server)
    assert len(apis) == 1
    assert apis[0].environ().get("PREFECT_API_DATABASE_MIGRATE_ON_START") == "false"
    response = httpx.post(
        f"{server.url}/processes/hello-world/execution",
        json={"inputs": {"name": "again"}},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["value"] == "Hello again!"
