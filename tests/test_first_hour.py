"""An operator's first hour: a TinyDB config with only the manager's name changed, and
config mistakes that stop the start instead of failing requests."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import (
    PYGEOAPI,
    ROOT,
    Server,
    free_port,
    migrated_home,
    wait_for,
    write_config,
)


def _broken_config(directory: Path, change: Any) -> Path:
    """A valid test config (its OpenAPI document written), then changed by `change`."""
    path = write_config(directory, port=free_port())
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    return path


def _typo(config: dict[str, Any]) -> None:
    config["resources"]["echo"]["processor"]["prefect"] = {"retires": 2}


def _ftp_connection(config: dict[str, Any]) -> None:
    config["server"]["manager"]["connection"] = "ftp://prefect.example/api"


def test_a_typo_under_processor_prefect_stops_pygeoapi_serve(tmp_path: Path) -> None:
    server = Server(_broken_config(tmp_path, _typo), {})
    with pytest.raises(RuntimeError, match="exited") as stopped:
        server.start()
    log = str(stopped.value)
    assert "resources.echo.processor.prefect.retires: unknown key; accepted keys:" in log
    assert "retries" in log


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_typo, "resources.echo.processor.prefect.retires: unknown key; accepted keys:"),
        (_ftp_connection, "server.manager.connection: 'ftp://prefect.example/api' is not"),
    ],
)
def test_a_config_mistake_stops_openapi_generate(tmp_path: Path, change: Any, message: str) -> None:
    path = _broken_config(tmp_path, change)
    generated = subprocess.run(
        [PYGEOAPI, "openapi", "generate", str(path), "--output-file", str(tmp_path / "o.yml")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert generated.returncode != 0
    assert message in generated.stdout + generated.stderr


def test_a_bad_connection_stops_pygeoapi_serve(tmp_path: Path) -> None:
    server = Server(_broken_config(tmp_path, _ftp_connection), {})
    with pytest.raises(RuntimeError, match="exited") as stopped:
        server.start()
    assert "server.manager.connection: 'ftp://prefect.example/api' is not accepted" in str(
        stopped.value
    )
    assert "a Prefect API URL (http:// or https://)" in str(stopped.value)


def test_a_tinydb_style_connection_path_keeps_the_embedded_database_there(
    server_factory: Any, tmp_path: Path
) -> None:
    """pygeoapi's configs name a TinyDB file: changing only `name` gives working jobs."""
    database = tmp_path / "pygeoapi-process-manager.db"
    env = {
        "PREFECT_API_URL": "",
        "PREFECT_HOME": migrated_home(tmp_path / "prefect-home"),
        # a fresh database migrates first; on a loaded machine that can outlast Prefect's 20 s
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    }
    server = server_factory(env=env, connection=str(database))
    server.start()
    sync = httpx.post(
        f"{server.url}/processes/hello-world/execution",
        json={"inputs": {"name": "TinyDB"}},
        timeout=360,
    )
    assert sync.status_code == 200, sync.text
    assert sync.json() == {"id": "echo", "value": "Hello TinyDB!"}
    submitted = httpx.post(
        f"{server.url}/processes/echo/execution",
        json={"inputs": {"echoInput": "kept"}},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert submitted.status_code == 201, submitted.text
    job = wait_for(
        lambda: httpx.get(submitted.headers["Location"], params={"f": "json"}, timeout=30).json(),
        lambda j: j["status"] in {"successful", "failed", "dismissed"},
        timeout=60,
    )
    assert job["status"] == "successful", job
    server.stop()
    with sqlite3.connect(database) as db:
        runs = db.execute("select count(*) from flow_run").fetchone()[0]
    assert runs >= 2


# -- add_job, update_job and get_job_result as pygeoapi's managers have them ---------------


def test_add_job_records_a_given_job_with_its_identifier_and_result(
    manager: Any, client: Any, tmp_path: Path
) -> None:
    output = tmp_path / "result.nc"
    output.write_bytes(b"CDF\x01 not really netCDF")
    job_id = str(uuid.uuid1())
    returned = manager.add_job(
        {
            "type": "process",
            "identifier": job_id,
            "process_id": "dummy",
            "created": "2024-08-22T12:00:00.000000Z",
            "status": "successful",
            "location": str(output),
            "mimetype": "application/x-netcdf",
            "message": "Job complete",
            "progress": 100,
        }
    )
    assert returned == job_id
    assert manager.get_job(job_id)["identifier"] == job_id
    assert manager.get_job_result(job_id) == ("application/x-netcdf", output.read_bytes())

    status = client.get(f"/jobs/{job_id}?f=json")
    assert status.status_code == 200, status.data
    assert status.json["jobID"] == job_id
    assert status.json["status"] == "successful"
    results = client.get(f"/jobs/{job_id}/results")
    assert results.status_code == 200
    assert results.data == output.read_bytes()
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert client.get(f"/jobs/{job_id}?f=json").status_code == 404


def test_update_job_records_an_output_as_pygeoapi_s_own_execution_does(
    manager: Any, tmp_path: Path
) -> None:
    job_id = str(uuid.uuid4())
    manager.add_job(
        {
            "identifier": job_id,
            "process_id": "hello-world",
            "status": "accepted",
            "location": None,
            "mimetype": "application/octet-stream",
        }
    )
    assert manager.get_job(job_id)["status"] == "accepted"
    output = tmp_path / f"hello-world-{job_id}"
    output.write_text(json.dumps({"id": "echo", "value": "Hello!"}))
    updated = manager.update_job(
        job_id,
        {
            "status": "successful",
            "location": str(output),
            "mimetype": "application/json",
            "message": "Job complete",
        },
    )
    assert updated
    assert manager.get_job(job_id)["status"] == "successful"
    assert manager.get_job_result(job_id) == ("application/json", {"id": "echo", "value": "Hello!"})


def test_add_job_refuses_an_identifier_that_is_not_a_uuid(manager: Any) -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        manager.add_job({"identifier": "../../etc/passwd", "process_id": "hello-world"})
