"""Jobs of stock processors run without Prefect's flow engine, still as flow runs."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import StateType
from pygeoapi.util import JobStatus, RequestedProcessExecutionMode

from pygeoapi_prefect.manager import PrefectManager
from pygeoapi_prefect.runtime.runner import LABEL_RUNNER, runner_id
from tests.conftest import TERMINAL, job_status, submit, wait_for, wait_until_final


def _state_types(job_id: str) -> list[StateType]:
    with get_client(sync_client=True) as prefect:
        states = prefect.read_flow_run_states(uuid.UUID(job_id))
    return [state.type for state in sorted(states, key=lambda s: s.timestamp)]


def _logs(job_id: str, until: str) -> list[str]:
    """The job's log lines in Prefect, once one containing `until` has arrived.

    (A job process ships its logs in batches, the last one as it exits.)
    """

    def read() -> list[str]:
        with get_client(sync_client=True) as prefect:
            logs = prefect.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(job_id)]))
            )
        return [log.message for log in logs]

    return wait_for(
        read, lambda lines: any(until in line for line in lines), message=f"a log line {until!r}"
    )


def _sync(client: Any, process_id: str, inputs: dict[str, Any]) -> Any:
    return client.post(f"/processes/{process_id}/execution", json={"inputs": inputs})


def test_sync_job_runs_in_the_request_thread_as_a_flow_run(client: Any) -> None:
    response = _sync(client, "hello-world", {"name": "direct"})
    assert response.status_code == 200, response.data
    assert response.json == {"id": "echo", "value": "Hello direct!"}
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    # created RUNNING by the web server, never scheduled for a job process
    assert _state_types(job_id) == [StateType.RUNNING, StateType.COMPLETED]
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(uuid.UUID(job_id))
    assert flow_run.labels[LABEL_RUNNER] == runner_id()
    assert "pygeoapi-process:hello-world" in flow_run.tags
    assert flow_run.start_time is not None and flow_run.end_time is not None
    job = job_status(client, job_id)
    assert job["status"] == "successful"
    assert job["started"] is not None and job["finished"] is not None
    results = client.get(f"/jobs/{job_id}/results?f=json")
    assert results.status_code == 200
    assert results.json == {"id": "echo", "value": "Hello direct!"}


def test_direct_binary_output_keeps_its_media_type(client: Any) -> None:
    response = _sync(client, "binary", {})
    assert response.status_code == 200
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert _state_types(job_id) == [StateType.RUNNING, StateType.COMPLETED]
    results = client.get(f"/jobs/{job_id}/results")
    assert results.status_code == 200
    assert results.data == response.data
    assert results.headers["Content-Type"] == response.headers["Content-Type"]


def test_failed_direct_job_is_a_failed_flow_run(client: Any) -> None:
    response = _sync(client, "fail", {"message": "direct failure"})
    assert response.status_code >= 400
    assert "direct failure" in response.json["description"]
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert _state_types(job_id) == [StateType.RUNNING, StateType.FAILED]
    job = job_status(client, job_id)
    assert job["status"] == "failed"
    assert "direct failure" in job["message"]


def test_processes_with_prefect_options_use_the_engine(client: Any) -> None:
    # `echo-one-at-a-time` has a concurrency limit: its jobs go through the flow engine
    response = _sync(client, "echo-one-at-a-time", {"echoInput": "engine"})
    assert response.status_code == 200, response.data
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    states = _state_types(job_id)
    assert states[0] == StateType.SCHEDULED
    assert states[-1] == StateType.COMPLETED


def test_direct_execution_can_be_turned_off(manager: Any, prefect_api: str) -> None:
    engine = PrefectManager(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "connection": prefect_api,
            "prefect": {
                "direct_execution": False,
                "server_id": manager.settings.server_label,
            },
            "processes": manager.processes,
        }
    )
    job_id, _, outputs, status, _ = engine.execute_process("hello-world", {"name": "engine"})
    assert status == JobStatus.successful, outputs
    assert _state_types(job_id)[0] == StateType.SCHEDULED
    _logs(job_id, until="Finished in state Completed")
    async_id, *_ = engine.execute_process(
        "hello-world",
        {"name": "engine"},
        execution_mode=RequestedProcessExecutionMode.respond_async,
    )
    final = wait_for(lambda: engine.get_job(async_id), lambda job: job["status"] in TERMINAL)
    assert final["status"] == "successful", final
    _logs(async_id, until="Finished in state Completed")


def test_async_job_runs_directly_in_its_job_process(client: Any) -> None:
    job_id = submit(client, "hello-world", {"name": "direct"})
    assert wait_until_final(client, job_id)["status"] == "successful"
    assert _state_types(job_id) == [StateType.SCHEDULED, StateType.RUNNING, StateType.COMPLETED]
    # A direct job ships all its lines at once, its first one among them.
    lines = _logs(job_id, until="without Prefect's flow engine")
    assert not any("Finished in state" in line for line in lines), lines
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(uuid.UUID(job_id))
    assert flow_run.labels[LABEL_RUNNER] == runner_id()  # run by this server's runner
    results = client.get(f"/jobs/{job_id}/results?f=json")
    assert results.json == {"id": "echo", "value": "Hello direct!"}


def test_dismissed_sync_job_never_succeeds(client: Any, app: Any) -> None:
    answers: list[Any] = []
    worker = threading.Thread(
        target=lambda: answers.append(
            _sync(app.test_client(), "echo", {"echoInput": "slow", "pause": 3})
        )
    )
    worker.start()

    def running_echo() -> dict[str, Any]:
        jobs = client.get("/jobs?f=json&limit=50").json["jobs"]
        found = [j for j in jobs if j["processID"] == "echo" and j["status"] == "running"]
        return found[0] if found else {}

    job = wait_for(running_echo, bool, timeout=20)
    dismissed = client.delete(f"/jobs/{job['jobID']}?f=json")
    assert dismissed.status_code == 200, dismissed.data
    worker.join(30)
    assert not worker.is_alive()
    assert answers[0].status_code >= 400
    assert "dismissed" in answers[0].json["description"]
    final = wait_for(lambda: job_status(client, job["jobID"]), lambda j: j["status"] != "running")
    assert final["status"] == "dismissed"
    assert _state_types(job["jobID"])[-1] == StateType.CANCELLED
