"""Errors that tell the truth, read as a user sees them (CLI output, HTTP answers)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from click.testing import CliRunner, Result
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import LogCreate, WorkPoolCreate
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed

from pygeoapi_prefect.cli import cli
from tests.conftest import EXAMPLE_CONFIG, ROOT, Server, free_port, wait_for

BROKEN = {"type": "process", "processor": {"name": "my_process.MyProcessor"}}
"""A process whose processor module is not importable."""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example config; echo runs on a deployment, `broken` does not import."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["resources"]["echo"]["processor"]["prefect"] = {"deployment": "pygeoapi-process/echo"}
    data["resources"]["broken"] = BROKEN
    path = tmp_path_factory.mktemp("messages") / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def work_pool(prefect_api: str) -> Iterator[str]:
    name = f"messages-pool-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    yield name
    with get_client(sync_client=True) as client:
        client.delete_work_pool(name)


@pytest.fixture(scope="module")
def base_url(prefect_api: str) -> str:
    """The session's Prefect server address: its API URL without `/api`."""
    assert prefect_api.endswith("/api")
    return prefect_api.removesuffix("/api")


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--pygeoapi-config", str(config)])


API_COMMANDS = [["processes"], ["deploy-process", "echo", "--work-pool", "geo"]]


# -- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("args", API_COMMANDS)
def test_cli_refuses_a_temporary_api(config: Path, args: list[str]) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = invoke(config, *args)
    assert result.exit_code == 1, result.output
    assert "PREFECT_API_URL is unset" in result.output
    assert "server.manager.connection" in result.output
    assert "temporary API" in result.output
    assert "not deployed" not in result.output


def test_worker_refuses_a_temporary_api(config: Path) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = invoke(config, "worker", "--work-pool", "geo")
    assert result.exit_code == 1, result.output
    assert "PREFECT_API_URL is unset" in result.output


@pytest.mark.parametrize("args", [*API_COMMANDS, ["worker", "--work-pool", "geo"]])
def test_cli_recognises_a_url_without_api(config: Path, base_url: str, args: list[str]) -> None:
    with temporary_settings(updates={PREFECT_API_URL: base_url}):
        result = invoke(config, *args)
    assert result.exit_code == 1, result.output
    assert f"The Prefect API URL {base_url} lacks /api" in result.output
    assert f"{base_url}/api/health answers" in result.output
    assert f"{base_url}/api." in result.output
    assert "unknown work pool" not in result.output
    assert "not deployed" not in result.output


def test_cli_reads_the_url_of_the_config(
    config: Path, base_url: str, tmp_path: Path, prefect_api: str
) -> None:
    data = yaml.safe_load(config.read_text())
    data["server"]["manager"]["connection"] = base_url
    path = tmp_path / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(data))
    result = invoke(path, "processes")
    assert result.exit_code == 1, result.output
    assert f"The Prefect API URL {base_url} lacks /api" in result.output


def test_cli_errors_name_the_api_url(config: Path, prefect_api: str) -> None:
    result = invoke(config, "deploy-process", "echo", "--work-pool", "no-such-pool")
    assert result.exit_code == 1, result.output
    assert f"unknown work pool 'no-such-pool' on the Prefect API at {prefect_api}" in (
        result.output
    )
    result = invoke(config, "processes")
    assert result.exit_code == 0, result.output
    assert f"Deployments on the Prefect API at {prefect_api}" in result.output
    unreachable = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: unreachable}):
        result = invoke(config, "processes")
    assert result.exit_code == 1, result.output
    assert f"cannot reach the Prefect API at {unreachable}" in result.output


def test_deploy_names_a_processor_that_does_not_import(config: Path, work_pool: str) -> None:
    result = invoke(config, "deploy-process", "broken", "--work-pool", work_pool)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "process 'broken'" in message
    assert "class 'MyProcessor' from module 'my_process'" in message
    assert "No module named 'my_process'" in message
    assert "PYTHONPATH" in message
    assert "install the package" in message


# -- the server -----------------------------------------------------------------------------


def _server(server_factory: Callable[..., Server], **manager: Any) -> Server:
    server = server_factory(**manager)
    data = yaml.safe_load(server.config.read_text())
    data["resources"]["echo-deployed"] = {
        "type": "process",
        "processor": {
            "name": "pygeoapi_prefect.examples.EchoProcessor",
            "prefect": {"deployment": "pygeoapi-process/echo-deployed"},
        },
    }
    server.config.write_text(yaml.safe_dump(data))
    server.start()
    return server


def _echo(server: Server, process_id: str = "echo") -> Any:
    return httpx.post(
        f"{server.url}/processes/{process_id}/execution",
        json={"inputs": {"echoInput": "hi"}},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )


def test_server_recognises_a_url_without_api(
    server_factory: Callable[..., Server], base_url: str
) -> None:
    server = _server(server_factory, connection=base_url)
    answers = {
        "sync execute": httpx.post(
            f"{server.url}/processes/hello-world/execution",
            json={"inputs": {"name": "x"}},
            timeout=60,
        ),
        "execute": _echo(server),
        "execute on a deployment": _echo(server, "echo-deployed"),
        "job list": httpx.get(f"{server.url}/jobs?f=json", timeout=60),
        "job": httpx.get(f"{server.url}/jobs/{uuid.uuid4()}?f=json", timeout=60),
    }
    for what, response in answers.items():
        assert response.status_code == 503, (what, response.text[:300])
        assert response.headers["Retry-After"], what
        assert response.headers["Content-Type"] == "application/json", what
        document = response.json()
        assert document["type"] == "ServiceUnavailable", (what, document)
        assert f"The Prefect API URL {base_url} lacks /api" in document["description"], what
        assert "deploy-process" not in document["description"], what


def test_every_503_has_retry_after(server_factory: Callable[..., Server]) -> None:
    server = _server(server_factory, connection=f"http://127.0.0.1:{free_port()}/api")
    for response in (_echo(server), httpx.get(f"{server.url}/jobs?f=json", timeout=60)):
        assert response.status_code == 503, response.text[:300]
        assert response.json()["type"] == "ServiceUnavailable"
        assert "unreachable" in response.json()["description"]
        assert response.headers["Retry-After"] == "5"


def test_a_missing_deployment_has_retry_after(
    client: Any, manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = {
        "name": "pygeoapi_prefect.examples.EchoProcessor",
        "prefect": {"deployment": f"pygeoapi-process/gone-{uuid.uuid4().hex[:8]}"},
    }
    monkeypatch.setitem(manager.processes, "echo-gone", {"type": "process", "processor": processor})
    response = client.post(
        "/processes/echo-gone/execution",
        json={"inputs": {"echoInput": "hi"}},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 503, response.data[:300]
    assert response.json["type"] == "DeploymentNotFound"
    assert response.headers["Retry-After"] == "5"


def test_server_start_names_a_processor_that_does_not_import(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    data = yaml.safe_load(server.config.read_text())
    data["resources"]["broken"] = BROKEN
    server.config.write_text(yaml.safe_dump(data))
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    log = " ".join(server.log.read_text().split())
    assert "ProcessorImportError: process 'broken'" in log
    assert "class 'MyProcessor' from module 'my_process'" in log
    assert "No module named 'my_process'" in log
    assert "PYTHONPATH" in log


# -- jobs -----------------------------------------------------------------------------------


def test_a_crashed_job_says_the_last_error_it_logged(client: Any, manager: Any) -> None:
    traceback = (
        "Flow could not be retrieved from deployment.\n"
        "Traceback (most recent call last):\n"
        '  File "<frozen importlib._bootstrap>", line 1324, in _find_and_load_unlocked\n'
        "ModuleNotFoundError: No module named 'my_process'\n"
    )
    run_id = uuid.UUID(manager.add_job({"process_id": "echo"}))
    now = dt.datetime.now(dt.UTC)
    logs = [
        (40, "an earlier error", now - dt.timedelta(seconds=2)),
        (40, traceback, now - dt.timedelta(seconds=1)),
        (20, "a later info line", now),
    ]
    with get_client(sync_client=True) as prefect:
        prefect.create_logs(
            [
                LogCreate(
                    name="prefect.flow_runs",
                    level=level,
                    message=message,
                    timestamp=timestamp,
                    flow_run_id=run_id,
                )
                for level, message, timestamp in logs
            ]
        )
        prefect.set_flow_run_state(
            run_id, Crashed(message="Process exited with status code: 1"), force=True
        )

    def read() -> dict[str, Any]:
        return dict(client.get(f"/jobs/{run_id}?f=json").json)

    job = wait_for(read, lambda j: "ModuleNotFoundError" in j.get("message", ""), timeout=20)
    assert job["status"] == "failed"
    assert job["message"] == (
        "Crashed: Process exited with status code: 1 (last error logged: "
        "ModuleNotFoundError: No module named 'my_process')"
    )
    listed = client.get("/jobs?f=json&limit=50").json["jobs"]
    [entry] = [j for j in listed if j["jobID"] == str(run_id)]
    assert "No module named 'my_process'" in entry["message"]


# -- the worker -----------------------------------------------------------------------------


def _workers_of(pool: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "worker" in cmdline and "start" in cmdline and pool in cmdline:
            found.append(process)
    return found


def test_worker_leaves_nothing_running_after_sigterm(
    config: Path, work_pool: str, prefect_api: str
) -> None:
    command = Path(sys.executable).parent / "pygeoapi-prefect"
    started = subprocess.Popen(
        [str(command), "worker", "--pygeoapi-config", str(config), "--work-pool", work_pool],
        env={**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with get_client(sync_client=True) as prefect:
            wait_for(
                lambda: {"workers": prefect.read_workers_for_work_pool(work_pool)},
                lambda found: bool(found["workers"]),
                timeout=60,
            )
        started.send_signal(signal.SIGTERM)
        started.wait(timeout=30)
        assert _workers_of(work_pool) == []
    finally:
        for leftover in [*_workers_of(work_pool), started]:
            if isinstance(leftover, subprocess.Popen):
                if leftover.poll() is None:
                    leftover.kill()
                    leftover.wait()
            else:
                leftover.kill()
