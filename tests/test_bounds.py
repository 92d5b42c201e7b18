"""Requests that no Prefect API can store or answer are refused, and break nothing else.

Over pygeoapi's own Flask app (stock mode, through the manager), and one full conformance
mode server with the default body limit. Issue 10, findings 1, 7 and 8.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_SERVER_API_MAX_PARAMETER_SIZE, temporary_settings

from pygeoapi_prefect.jobs import MAX_DURATION, MAX_OFFSET, JobQuery, JobQueryError
from tests.conftest import free_port, submit, write_config

EXECUTE = "/processes/echo/execution"
ASYNC = {"Prefer": "respond-async"}


def nested(depth: int) -> list[Any]:
    """An array nested `depth` levels deep (`[]` is 1 level)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_output_request(depth: int = 250) -> dict[str, Any]:
    """The audit's repro: an output spec with an extra key nested `depth` levels deep."""
    return {
        "inputs": {"echoInput": "x"},
        "outputs": {"echoOutput": {"transmissionMode": "value", "x": nested(depth)}},
    }


@contextmanager
def poisoned_job(like: str) -> Iterator[str]:
    """A job whose parameters nest 250 levels, stored as a server without bounds stored it.

    It carries the tags of the job `like` (so it is a job of the same server). The Prefect
    API stores it, and then fails (500) every filtered read that returns it. It is deleted
    afterwards, so that it poisons no other test's job list.
    """
    with get_client(sync_client=True) as client:
        tags = client.read_flow_run(uuid.UUID(like)).tags
        flow_id = client.create_flow_from_name("pygeoapi-bounds-test")
        response = client.request(
            "POST",
            "/flow_runs/",
            json={
                "flow_id": str(flow_id),
                "name": "poisoned",
                "parameters": {**deep_output_request(), "response": "raw"},
                "tags": tags,
                "state": {"type": "SCHEDULED", "name": "Scheduled"},
            },
        )
        run_id = uuid.UUID(response.json()["id"])
        try:
            yield str(run_id)
        finally:
            with suppress(ObjectNotFound):  # removed by the test itself
                client.delete_flow_run(run_id)


# -- finding 1: depth and unknown keys -----------------------------------------------------


def test_the_250_deep_repro_is_refused_and_job_reads_still_answer(client: Any) -> None:
    other = submit(client, "echo", {"echoInput": "another job"})
    response = client.post(EXECUTE, json=deep_output_request(), headers=ASYNC)
    try:
        statuses = {
            "execute": response.status_code,
            "job list": client.get("/jobs?f=json").status_code,
            "another job": client.get(f"/jobs/{other}?f=json").status_code,
        }
    finally:
        if response.status_code == 201:  # stored: remove it, or it breaks other tests
            with get_client(sync_client=True) as prefect:
                prefect.delete_flow_run(uuid.UUID(response.json["jobID"]))
    assert statuses == {"execute": 400, "job list": 200, "another job": 200}
    assert response.json["code"] == "InvalidParameterValue"
    assert "(at /outputs/echoOutput/x" in response.json["description"]


@pytest.mark.parametrize("depth", [65, 254, 1000])
def test_nesting_anywhere_in_the_request_is_refused_by_path(client: Any, depth: int) -> None:
    bodies = {
        "/inputs/echoInput": {"inputs": {"echoInput": {"value": "x", "x": nested(depth)}}},
        "/outputs/echoOutput": deep_output_request(depth),
        "/subscriber/successUri": {
            "inputs": {"echoInput": "x"},
            "subscriber": {"successUri": nested(depth)},
        },
    }
    for path, body in bodies.items():
        response = client.post(EXECUTE, json=body, headers=ASYNC)
        assert response.status_code == 400, (path, response.data[:300])
        assert path in response.json["description"], response.json


def test_extra_keys_of_qualified_values_and_output_specs_are_refused(client: Any) -> None:
    bodies = {
        "/inputs/echoInput/x": {"inputs": {"echoInput": {"value": "x", "x": 1}}},
        "/inputs/echoInput/rel2": {
            "inputs": {"echoInput": {"href": "https://example.org/a", "rel2": 1}}
        },
        "/outputs/echoOutput/x": {
            "inputs": {"echoInput": "x"},
            "outputs": {"echoOutput": {"transmissionMode": "value", "x": 1}},
        },
    }
    for path, body in bodies.items():
        response = client.post(EXECUTE, json=body, headers=ASYNC)
        assert response.status_code == 400, (path, response.data[:300])
        assert f"(at {path})" in response.json["description"], response.json


def test_a_job_that_breaks_batched_reads_breaks_no_other_read(client: Any) -> None:
    others = [submit(client, "echo", {"echoInput": f"job {n}"}) for n in range(3)]
    with poisoned_job(like=others[0]) as poisoned:

        def read(job_id: str) -> int:
            return int(client.application.test_client().get(f"/jobs/{job_id}?f=json").status_code)

        ids = [poisoned, *others] * 15
        with ThreadPoolExecutor(max_workers=30) as pool:
            statuses = dict(zip(range(len(ids)), pool.map(read, ids), strict=True))
        failed = [(ids[n], status) for n, status in statuses.items() if status != 200]
        assert not failed, failed
        # The poisoned job itself reads on its own.
        assert client.get(f"/jobs/{poisoned}?f=json").json["status"] == "accepted"


# -- finding 7: sizes and Prefect's 4xx ---------------------------------------------------


def test_a_request_larger_than_prefect_accepts_is_413(client: Any) -> None:
    body = {"inputs": {"echoInput": "x" * 600_000}}
    response = client.post(EXECUTE, json=body, headers=ASYNC)
    assert response.status_code == 413, response.data[:300]
    assert response.json["code"] == "PayloadTooLarge"
    assert "524288" in response.json["description"]


def test_a_prefect_4xx_is_a_short_400_and_its_body_is_not_logged(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # This server believes Prefect takes parameters of any size; the Prefect API refuses.
    body = {"inputs": {"echoInput": "x" * 600_000}}
    unlimited = temporary_settings({PREFECT_SERVER_API_MAX_PARAMETER_SIZE: 0})
    # (pygeoapi itself logs the whole request twice, at DEBUG.)
    with caplog.at_level(logging.INFO), unlimited:
        response = client.post(EXECUTE, json=body, headers=ASYNC)
    assert response.status_code == 400, response.data[:300]
    description = response.json["description"]
    assert description.startswith("The Prefect API refused the request (HTTP 422)")
    assert len(description) < 400, description
    assert len(caplog.text) < 20_000, f"{len(caplog.text)} characters of log for one request"


# -- finding 8: query values out of range --------------------------------------------------


def test_an_offset_beyond_any_job_list_is_a_400_naming_it(client: Any) -> None:
    response = client.get("/jobs?f=json&offset=9223372036854775808")
    assert response.status_code == 400, response.data[:300]
    assert response.json["description"].startswith("offset:")
    assert client.get(f"/jobs?f=json&offset={MAX_OFFSET}").status_code == 200


@pytest.mark.parametrize(
    ("fields", "parameter"),
    [
        ({"min_duration": 99999999999.0}, "minDuration"),
        ({"max_duration": float("inf")}, "maxDuration"),
        ({"min_duration": float("nan")}, "minDuration"),
        ({"offset": 9223372036854775808}, "offset"),
        ({"offset": -1}, "offset"),
        ({"process_ids": tuple(f"p{n}" for n in range(3000))}, "processID"),
    ],
)
def test_job_queries_out_of_range_name_the_parameter(
    fields: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(JobQueryError) as info:
        JobQuery(**fields)
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}:")


def test_the_longest_durations_allowed_are_queries_prefect_answers(manager: Any) -> None:
    jobs, matched = manager.find_jobs(JobQuery(min_duration=MAX_DURATION, limit=5))
    assert (jobs, matched) == ([], 0)
    jobs, _ = manager.find_jobs(JobQuery(max_duration=MAX_DURATION, limit=5))
    assert isinstance(jobs, list)


def test_a_time_with_no_utc_equivalent_is_refused() -> None:
    from datetime import datetime

    late = datetime.fromisoformat("9999-12-31T23:59:59-23:59")
    with pytest.raises(JobQueryError) as info:
        JobQuery(created_before=late)
    assert info.value.parameter == "datetime"


# -- full conformance mode with its default body limit ------------------------------------


@pytest.fixture(scope="module")
def full_default(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Any]:
    """A full conformance mode server whose `max_body_bytes` is not set."""
    from tests.conformance.conftest import ROOT, FullServer

    directory = tmp_path_factory.mktemp("full-default")
    server = FullServer(
        write_config(directory, port=free_port()),
        {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("size", [600_000, 5_000_000])
def test_full_mode_refuses_bodies_prefect_would_refuse_without_logging_them(
    full_default: Any, size: int
) -> None:
    log = Path(full_default.log)
    before = log.stat().st_size
    content = json.dumps({"inputs": {"echoInput": "x" * size}}).encode()
    response = httpx.post(
        f"{full_default.url}{EXECUTE}",
        content=content,
        headers={**ASYNC, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:300]
    assert response.json()["code"] == "PayloadTooLarge"
    assert str(512 * 1024) in response.json()["description"]
    assert log.stat().st_size - before < 20_000
