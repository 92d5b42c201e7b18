"""DELETE /jobs/{id}: dismiss stops the work; deleting a finished job removes it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from tests.conftest import job_status, submit, wait_for, wait_until_final


def _running_pid(manager: Any, job_id: str) -> int:
    run_id = uuid.UUID(job_id)
    job = manager.runner._jobs[run_id]
    assert job.started.wait(10)
    return int(job.pid)


def test_dismiss_stops_a_running_job(client: Any, manager: Any) -> None:
    job_id = submit(client, "echo", {"echoInput": "never", "pause": 60})
    wait_for(lambda: job_status(client, job_id), lambda j: j["status"] == "running")
    pid = _running_pid(manager, job_id)

    response = client.delete(f"/jobs/{job_id}?f=json")
    assert response.status_code == 200
    # stock pygeoapi sends this body without a JSON content type
    assert json.loads(response.data)["status"] == "dismissed"
    final = wait_for(lambda: job_status(client, job_id), lambda j: j["status"] == "dismissed", 5)
    assert final["message"] == "Job dismissed"

    # the work is gone, and the job does not flip to successful later
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
    # (once the runner has recorded how the job's process ended, nothing of it is left)
    run_id = uuid.UUID(job_id)
    wait_for(lambda: manager.runner.owns(run_id), lambda owned: not owned, timeout=10)
    assert job_status(client, job_id)["status"] == "dismissed"
    with get_client(sync_client=True) as prefect:
        assert prefect.read_flow_run(job_id).state_type == StateType.CANCELLED  # type: ignore[arg-type]
    assert client.get(f"/jobs/{job_id}/results?f=json").status_code == 404


def test_dismiss_from_another_replica_stops_the_job(client: Any, manager: Any) -> None:
    """A replica that does not run the job sets CANCELLING; the one that runs it stops it."""
    from prefect.states import Cancelling

    job_id = submit(client, "echo", {"echoInput": "never", "pause": 60})
    wait_for(lambda: job_status(client, job_id), lambda j: j["status"] == "running")
    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(job_id, Cancelling(message="from elsewhere"), force=True)  # type: ignore[arg-type]
    final = wait_for(lambda: job_status(client, job_id), lambda j: j["status"] == "dismissed", 5)
    assert final["status"] == "dismissed"


def test_dismiss_an_accepted_job(client: Any, manager: Any) -> None:
    job_id = manager.add_job({"process_id": "echo"})
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert job_status(client, job_id)["status"] == "dismissed"


def test_deleting_a_finished_job_removes_it_and_its_results(
    client: Any, manager: Any, config_dir: Path
) -> None:
    job_id = submit(client, "echo", {"echoInput": "to delete"})
    assert wait_until_final(client, job_id)["status"] == "successful"
    stored = [p for p in (config_dir / "results").rglob("*") if p.is_file()]
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(job_id).state  # type: ignore[arg-type]
    key = state.data.storage_key  # type: ignore[union-attr]
    assert any(p.name == Path(key).name for p in stored)

    response = client.delete(f"/jobs/{job_id}?f=json")
    assert response.status_code == 200
    assert not (config_dir / "results" / key).exists()
    assert client.get(f"/jobs/{job_id}?f=json").status_code == 404
    assert client.get(f"/jobs/{job_id}/results?f=json").status_code == 404
    assert client.delete(f"/jobs/{job_id}?f=json").status_code == 404


def test_a_job_whose_process_dies_ends_failed(client: Any, manager: Any) -> None:
    job_id = submit(client, "echo", {"echoInput": "crash", "pause": 60})
    wait_for(lambda: job_status(client, job_id), lambda j: j["status"] == "running")
    os.killpg(_running_pid(manager, job_id), 9)
    final = wait_until_final(client, job_id, timeout=10)
    assert final["status"] == "failed"
    assert "exited with code" in final["message"]
