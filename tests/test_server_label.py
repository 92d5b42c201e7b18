"""A server's jobs are its own: two servers on one Prefect API never see each other's jobs.

A job carries the server's tag (`pygeoapi-server:<server_id>`) and the tag of one of its
configured processes. Any other flow run, even one tagged `pygeoapi`, is no job: 404 on
read and delete, never listed, never deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed

from tests.conftest import TERMINAL, free_port, wait_for, write_config


def _config(directory: Path, server_id: str) -> Path:
    directory.mkdir()
    return write_config(directory, port=free_port(), prefect={"server_id": server_id})


def _status(server: Any, job_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/jobs/{job_id}?f=json", timeout=60)


def _listed(server: Any) -> set[str]:
    response = httpx.get(f"{server.url}/jobs?f=json&limit=1000", timeout=60)
    assert response.status_code == 200, response.text
    return {job["jobID"] for job in response.json()["jobs"]}


def _foreign_run(tags: list[str]) -> str:
    """A finished flow run created directly in the Prefect API, not by a pygeoapi server."""

    @flow(name="hello-world")
    def hello_world() -> None:
        """A stand-in flow: only its name matters."""

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(
            flow=hello_world, tags=tags, parameters={"inputs": {"name": "not a job"}}
        )
        client.set_flow_run_state(run.id, Completed(), force=True)
        return str(run.id)


def _exists(run_id: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_flow_run(run_id)  # type: ignore[arg-type]
        except ObjectNotFound:
            return False
    return True


@pytest.mark.timeout(600)
def test_servers_sharing_a_prefect_api_keep_their_jobs_apart(
    server_factory: Any, tmp_path: Path, prefect_api: str
) -> None:
    env = {"PREFECT_API_URL": prefect_api}
    first = server_factory(env=env, config=_config(tmp_path / "a", "server-a"))
    second = server_factory(env=env, config=_config(tmp_path / "b", "server-b"))
    first.start()
    second.start()

    submitted = httpx.post(
        f"{first.url}/processes/hello-world/execution",
        json={"inputs": {"name": "a"}},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["jobID"]
    wait_for(lambda: _status(first, job_id).json(), lambda job: job["status"] in TERMINAL, 120)

    # The other server neither reads, lists nor deletes it.
    assert _status(second, job_id).status_code == 404
    assert job_id not in _listed(second)
    assert httpx.delete(f"{second.url}/jobs/{job_id}", timeout=60).status_code == 404
    assert _status(first, job_id).status_code == 200
    assert job_id in _listed(first)

    # Runs made directly in Prefect: tagged `pygeoapi` only, or with a server's tag but no
    # configured process's tag, are nobody's jobs.
    strangers = [
        _foreign_run(["pygeoapi"]),
        _foreign_run(["pygeoapi", "pygeoapi-process:hello-world"]),
        _foreign_run(["pygeoapi", "pygeoapi-server:server-a", "pygeoapi-process:elsewhere"]),
    ]
    for server in (first, second):
        listed = _listed(server)
        for run_id in strangers:
            assert _status(server, run_id).status_code == 404, run_id
            assert run_id not in listed
            assert httpx.delete(f"{server.url}/jobs/{run_id}", timeout=60).status_code == 404
            assert _exists(run_id)

    # Its own server still removes it.
    assert httpx.delete(f"{first.url}/jobs/{job_id}", timeout=60).status_code == 200
    assert not _exists(job_id)
