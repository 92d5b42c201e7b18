"""Executing processes sync and async through pygeoapi's own app."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client

from tests.conftest import job_status, submit, wait_for, wait_until_final
from tests.processes import PAYLOAD


def test_sync_execute_stock_processor(client: Any) -> None:
    response = client.post("/processes/hello-world/execution", json={"inputs": {"name": "Prefect"}})
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"id": "echo", "value": "Hello Prefect!"}
    assert response.headers["Preference-Applied"] == "wait"


def test_sync_execute_document_response(client: Any) -> None:
    response = client.post(
        "/processes/echo/execution",
        json={"inputs": {"echoInput": "teststring"}, "response": "document"},
    )
    assert response.status_code == 200, response.data
    assert response.json == {"outputs": [{"id": "echoOutput", "value": "teststring"}]}


def test_async_execute_runs_in_background(client: Any) -> None:
    job_id = submit(client, "echo", {"echoInput": "teststring", "pause": 0.5})
    first = job_status(client, job_id)
    assert first["status"] in {"accepted", "running"}
    assert first["processID"] == "echo"
    assert first["created"]
    final = wait_until_final(client, job_id)
    assert final["status"] == "successful"
    assert final["progress"] == 100
    assert final["created"] <= final["started"] <= final["finished"]
    assert final["updated"] >= final["finished"]
    results = client.get(f"/jobs/{job_id}/results?f=json")
    assert results.status_code == 200
    assert results.json == {"id": "echoOutput", "value": "teststring"}
    # durable: a second read answers the same
    assert client.get(f"/jobs/{job_id}/results?f=json").json == results.json


def test_async_hello_world(client: Any) -> None:
    job_id = submit(client, "hello-world", {"name": "async", "message": "hi"})
    assert wait_until_final(client, job_id)["status"] == "successful"
    body = client.get(f"/jobs/{job_id}/results?f=json").json
    assert body == {"id": "echo", "value": "Hello async! hi"}


def test_job_is_a_named_tagged_flow_run(client: Any) -> None:
    job_id = submit(client, "progress", {"steps": 1, "stepSeconds": 0})
    wait_until_final(client, job_id)
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(job_id)  # type: ignore[arg-type]
        flow = prefect.read_flow(flow_run.flow_id)
    assert flow.name == "progress"
    assert flow_run.name.startswith("progress-")
    assert {"pygeoapi", "pygeoapi-process:progress", "example"} <= set(flow_run.tags)
    assert flow_run.parameters["inputs"] == {"steps": 1, "stepSeconds": 0}


def test_binary_output_sync_and_async(client: Any) -> None:
    response = client.post("/processes/binary/execution", json={"inputs": {"size": 1000}})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.data == (PAYLOAD * 4)[:1000]
    job_id = submit(client, "binary", {"size": 300})
    assert wait_until_final(client, job_id)["status"] == "successful"
    results = client.get(f"/jobs/{job_id}/results")
    assert results.headers["Content-Type"] == "application/octet-stream"
    assert results.data == (PAYLOAD * 2)[:300]


def test_failed_sync_job_answers_with_the_failure(client: Any) -> None:
    response = client.post("/processes/fail/execution", json={"inputs": {"message": "boom"}})
    assert response.status_code == 400
    assert response.json["type"] == "InvalidParameterValue"
    assert "boom" in response.json["description"]


def test_failed_async_job_carries_the_reason(client: Any) -> None:
    job_id = submit(client, "fail", {"message": "disk on fire"})
    final = wait_until_final(client, job_id)
    assert final["status"] == "failed"
    assert "disk on fire" in final["message"]
    results = client.get(f"/jobs/{job_id}/results?f=json")
    assert results.status_code == 400
    assert results.json["type"] == "InvalidParameterValue"


def test_results_of_an_unfinished_job_are_not_ready(client: Any) -> None:
    job_id = submit(client, "echo", {"echoInput": "slow", "pause": 5})
    response = client.get(f"/jobs/{job_id}/results?f=json")
    assert response.status_code == 404
    assert response.json["type"] == "ResultNotReady"
    assert client.delete(f"/jobs/{job_id}").status_code == 200


def test_process_concurrency_limit_keeps_extra_jobs_accepted(client: Any) -> None:
    first = submit(client, "echo-one-at-a-time", {"echoInput": "1", "pause": 2})
    second = submit(client, "echo-one-at-a-time", {"echoInput": "2", "pause": 0})
    seen: list[tuple[str, str]] = []

    def states() -> tuple[str, str]:
        seen.append((job_status(client, first)["status"], job_status(client, second)["status"]))
        assert seen[-1][1] in {"accepted", "running", "successful"}, seen
        return seen[-1]

    wait_for(states, lambda pair: pair[1] == "successful", timeout=30, interval=0.05)
    assert ("running", "accepted") in seen, seen
    assert job_status(client, first)["status"] == "successful"
