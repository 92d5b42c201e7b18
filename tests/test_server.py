"""The real `pygeoapi serve`: embedded default, restart, an unreachable Prefect API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import TERMINAL, free_port, migrated_home, wait_for


def _wait_final(url: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: dict(httpx.get(url, params={"f": "json"}, timeout=30).json()),
        lambda job: job["status"] in TERMINAL,
        timeout,
        interval=0.2,
        message=f"{url} to finish",
    )


def test_embedded_default_runs_jobs_and_keeps_them_across_a_restart(
    server_factory: Any, tmp_path: Path
) -> None:
    """No Prefect server, no PREFECT_API_URL: the pygeoapi process runs everything."""
    env = {"PREFECT_API_URL": "", "PREFECT_HOME": migrated_home(tmp_path / "prefect-home")}
    server = server_factory(env=env)
    server.start()
    sync = httpx.post(
        f"{server.url}/processes/hello-world/execution",
        json={"inputs": {"name": "embedded"}},
        timeout=120,
    )
    assert sync.status_code == 200, sync.text
    assert sync.json() == {"id": "echo", "value": "Hello embedded!"}

    submitted = httpx.post(
        f"{server.url}/processes/echo/execution",
        json={"inputs": {"echoInput": "kept", "pause": 0.2}},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert submitted.status_code == 201, submitted.text
    location = submitted.headers["Location"]
    assert _wait_final(location)["status"] == "successful"
    assert (tmp_path / "prefect-home").is_dir()

    server.stop()
    server.start()
    job = httpx.get(location, params={"f": "json"}, timeout=60)
    assert job.status_code == 200
    assert job.json()["status"] == "successful"
    results = httpx.get(f"{location}/results", params={"f": "json"}, timeout=30)
    assert results.json() == {"id": "echoOutput", "value": "kept"}
    listing = httpx.get(f"{server.url}/jobs", params={"f": "json"}, timeout=30).json()
    assert submitted.json()["jobID"] in {j["jobID"] for j in listing["jobs"]}

    # Killed, not stopped: the embedded Prefect API does not outlive its pygeoapi process.
    assert server.process is not None
    family = psutil.Process(server.process.pid).children(recursive=True)
    apis = [process for process in family if "uvicorn" in " ".join(process.cmdline())]
    assert len(apis) == 1, family
    starter = apis[0].parent()
    assert starter is not None
    starter.kill()
    _, alive = psutil.wait_procs(apis, timeout=20)
    assert not alive, "the embedded Prefect API outlived its pygeoapi process"


def test_unreachable_prefect_api_answers_503(server_factory: Any) -> None:
    server = server_factory(env={"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    server.start()
    for method, path in [
        ("GET", "/jobs?f=json"),
        ("GET", "/jobs/4b3c1ef2-1111-4222-8333-944444444444?f=json"),
        ("POST", "/processes/hello-world/execution"),
    ]:
        response = httpx.request(
            method, f"{server.url}{path}", json={"inputs": {"name": "x"}}, timeout=60
        )
        assert response.status_code == 503, (path, response.text)
        body = response.json()
        assert "Prefect API is unreachable" in body["description"]
