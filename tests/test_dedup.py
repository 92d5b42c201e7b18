"""Deduplicated submissions (`processor.prefect.dedup`), against real `pygeoapi serve`.

Every test gives its requests inputs of their own (a fresh token), so that the jobs of
one test never deduplicate with another's on the shared server.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun

from pygeoapi_prefect.dedup import DEDUP_HEADER, DEDUP_KEY_PREFIX, dedup_key
from pygeoapi_prefect.jobs import process_tag
from pygeoapi_prefect.settings import ConfigError, ProcessSettings, process_settings_of
from tests.conftest import TERMINAL, Server, free_port, wait_for, write_config

DEDUP_PROCESSES: dict[str, dict[str, Any]] = {
    # direct execution: sync in the request's thread, async in a job process
    "echo-dedup": {"name": "pygeoapi_prefect.examples.EchoProcessor", "prefect": {"dedup": True}},
    # a timeout takes the job through Prefect's flow engine
    "echo-dedup-engine": {
        "name": "pygeoapi_prefect.examples.EchoProcessor",
        "prefect": {"dedup": True, "timeout": 600},
    },
    "echo-dedup-window": {
        "name": "pygeoapi_prefect.examples.EchoProcessor",
        "prefect": {"dedup": "2s"},
    },
    "fail-dedup": {"name": "pygeoapi_prefect.examples.FailProcessor", "prefect": {"dedup": True}},
}


def dedup_config(directory: Path) -> Path:
    """The tests' config, plus processes that deduplicate."""
    directory.mkdir(exist_ok=True)
    path = write_config(directory, port=free_port())
    config = yaml.safe_load(path.read_text())
    for process_id, processor in DEDUP_PROCESSES.items():
        config["resources"][process_id] = {"type": "process", "processor": processor}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Server]:
    server = Server(
        dedup_config(tmp_path_factory.mktemp("dedup")), {"PREFECT_API_URL": prefect_api}
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def token() -> str:
    return uuid.uuid4().hex


def execute(server: Server, process_id: str, inputs: dict[str, Any], **headers: str) -> Any:
    return httpx.post(
        f"{server.url}/processes/{process_id}/execution",
        json={"inputs": inputs},
        headers=headers,
        timeout=120,
    )


def submit(server: Server, process_id: str, inputs: dict[str, Any]) -> httpx.Response:
    response = execute(server, process_id, inputs, Prefer="respond-async")
    assert response.status_code == 201, response.text
    job_id = response.json()["jobID"]
    assert response.headers["Location"].endswith(f"/jobs/{job_id}")
    return response


def job(server: Server, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/jobs/{job_id}", params={"f": "json"}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def until_final(server: Server, job_id: str) -> dict[str, Any]:
    return wait_for(lambda: job(server, job_id), lambda j: j["status"] in TERMINAL, timeout=60)


def runs_with(process_id: str, inputs: dict[str, Any]) -> list[FlowRun]:
    """The flow runs of a process whose parameters carry these inputs."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[process_tag(process_id)])),
            limit=200,
        )
    return [run for run in runs if run.parameters.get("inputs") == inputs]


def test_a_duplicate_async_submission_gets_the_same_job(server: Server) -> None:
    inputs = {"echoInput": token(), "pause": 1}
    first = submit(server, "echo-dedup", inputs)
    second = submit(server, "echo-dedup", inputs)
    job_id = first.json()["jobID"]
    assert second.json()["jobID"] == job_id
    assert second.headers["Location"] == first.headers["Location"]
    assert DEDUP_HEADER not in first.headers
    assert second.headers[DEDUP_HEADER] == job_id
    assert until_final(server, job_id)["status"] == "successful"
    # once it has finished, too
    assert submit(server, "echo-dedup", inputs).json()["jobID"] == job_id
    runs = runs_with("echo-dedup", inputs)
    assert [str(run.id) for run in runs] == [job_id]
    assert runs[0].idempotency_key is not None
    assert runs[0].idempotency_key.startswith(DEDUP_KEY_PREFIX)


def test_a_duplicate_sync_request_gets_the_earlier_result(server: Server) -> None:
    inputs = {"echoInput": token(), "pause": 1}
    # two at once: the second waits for the first's job, which runs in the first's thread
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: execute(server, "echo-dedup", inputs), range(2)))
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json() == {"id": "echoOutput", "value": inputs["echoInput"]}
    assert sum(DEDUP_HEADER in response.headers for response in responses) == 1
    [run] = runs_with("echo-dedup", inputs)
    assert {r.headers.get(DEDUP_HEADER) for r in responses} == {None, str(run.id)}
    # and after it: the result, no second run
    again = execute(server, "echo-dedup", inputs)
    assert again.status_code == 200, again.text
    assert again.json() == {"id": "echoOutput", "value": inputs["echoInput"]}
    assert again.headers[DEDUP_HEADER] == str(run.id)
    assert len(runs_with("echo-dedup", inputs)) == 1


def test_sync_and_async_share_a_job_on_the_flow_engine(server: Server) -> None:
    inputs = {"echoInput": token()}
    job_id = submit(server, "echo-dedup-engine", inputs).json()["jobID"]
    response = execute(server, "echo-dedup-engine", inputs)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "echoOutput", "value": inputs["echoInput"]}
    assert response.headers[DEDUP_HEADER] == job_id
    assert [str(run.id) for run in runs_with("echo-dedup-engine", inputs)] == [job_id]


def test_a_failed_or_dismissed_earlier_job_does_not_count(server: Server) -> None:
    inputs = {"message": token()}
    failed = []
    for _ in range(3):  # each failure makes the next request run: a chain of keys
        response = submit(server, "fail-dedup", inputs)
        assert DEDUP_HEADER not in response.headers
        failed.append(response.json()["jobID"])
        assert until_final(server, failed[-1])["status"] == "failed"
    assert len(set(failed)) == 3
    runs = {str(run.id): run for run in runs_with("fail-dedup", inputs)}
    assert set(runs) == set(failed)
    key = runs[failed[0]].idempotency_key
    assert runs[failed[1]].idempotency_key == f"{key}:after:{failed[0]}"
    assert runs[failed[2]].idempotency_key == f"{key}:after:{failed[1]}"

    echo = {"echoInput": token(), "pause": 60}
    dismissed = submit(server, "echo-dedup", echo).json()["jobID"]
    wait_for(lambda: job(server, dismissed), lambda j: j["status"] == "running")
    deleted = httpx.delete(f"{server.url}/jobs/{dismissed}", params={"f": "json"}, timeout=60)
    assert deleted.status_code == 200, deleted.text
    until_final(server, dismissed)
    fresh = submit(server, "echo-dedup", echo)
    assert fresh.json()["jobID"] != dismissed
    assert DEDUP_HEADER not in fresh.headers
    httpx.delete(f"{server.url}/jobs/{fresh.json()['jobID']}", params={"f": "json"}, timeout=60)


def test_a_different_request_makes_a_new_job(server: Server) -> None:
    inputs = {"echoInput": token()}
    job_id = submit(server, "echo-dedup", inputs).json()["jobID"]
    other = submit(server, "echo-dedup", {**inputs, "pause": 0}).json()["jobID"]
    assert other != job_id
    document = httpx.post(
        f"{server.url}/processes/echo-dedup/execution",
        json={"inputs": inputs, "response": "document"},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert document.status_code == 201, document.text
    assert document.json()["jobID"] not in (job_id, other)


def test_dedup_is_off_by_default(server: Server) -> None:
    inputs = {"echoInput": token()}
    first = submit(server, "echo", inputs)
    second = submit(server, "echo", inputs)
    assert first.json()["jobID"] != second.json()["jobID"]
    assert DEDUP_HEADER not in second.headers
    assert len(runs_with("echo", inputs)) == 2


def test_an_earlier_job_counts_within_the_window_only(server: Server) -> None:
    inputs = {"echoInput": token()}
    first = submit(server, "echo-dedup-window", inputs).json()["jobID"]
    assert submit(server, "echo-dedup-window", inputs).json()["jobID"] == first  # within 2 s
    # past the window, a request makes a new job (and the requests before it did not)
    later = wait_for(
        lambda: submit(server, "echo-dedup-window", inputs).json(),
        lambda answer: answer["jobID"] != first,
        timeout=30,
        interval=0.5,
    )
    runs = runs_with("echo-dedup-window", inputs)
    assert {str(run.id) for run in runs} == {first, later["jobID"]}
    assert submit(server, "echo-dedup-window", inputs).json()["jobID"] == later["jobID"]


def test_a_bad_dedup_value_stops_the_start(server: Server, tmp_path: Path) -> None:
    config = yaml.safe_load(server.config.read_text())
    config["resources"]["echo"]["processor"]["prefect"] = {"dedup": "soon"}
    port = free_port()  # (not the running server's: that one answers)
    config["server"]["bind"]["port"] = port
    config["server"]["url"] = f"http://127.0.0.1:{port}"
    path = tmp_path / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(config))
    shutil.copy(server.config.parent / "pygeoapi-openapi.yml", tmp_path)
    bad = Server(path, server.env)
    try:
        with pytest.raises(RuntimeError, match="exited"):
            bad.start()
    finally:
        bad.stop()
    log = " ".join(bad.log.read_text().split())
    assert "ConfigError: resources.echo.processor.prefect.dedup:" in log
    assert "'soon'" in log


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        (True, True),
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
    ],
)
def test_dedup_values(value: Any, expected: Any) -> None:
    settings = process_settings_of("p", {"processor": {"prefect": {"dedup": value}}})
    assert settings.dedup == expected
    assert settings.dedup_window == (expected if isinstance(expected, timedelta) else None)
    assert ProcessSettings().dedup is False


@pytest.mark.parametrize("value", ["soon", "24", "0s", "1w", "-1h", 3600, None, "true"])
def test_bad_dedup_values_name_the_resource_and_key(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^resources\.p\.processor\.prefect\.dedup: .*24h"):
        process_settings_of("p", {"processor": {"prefect": {"dedup": value}}})


def test_the_key_is_canonical_and_covers_the_request() -> None:
    key = dedup_key("s", "echo", "1.0.0", {"a": 1, "b": [1, 2]}, None, "raw")
    assert key.startswith(DEDUP_KEY_PREFIX) and len(key) == len(DEDUP_KEY_PREFIX) + 64
    assert dedup_key("s", "echo", "1.0.0", {"b": [1, 2], "a": 1}, None, "raw") == key
    others = [
        dedup_key("t", "echo", "1.0.0", {"a": 1, "b": [1, 2]}, None, "raw"),
        dedup_key("s", "echo2", "1.0.0", {"a": 1, "b": [1, 2]}, None, "raw"),
        dedup_key("s", "echo", "1.0.1", {"a": 1, "b": [1, 2]}, None, "raw"),
        dedup_key("s", "echo", "1.0.0", {"a": 1, "b": [2, 1]}, None, "raw"),
        dedup_key("s", "echo", "1.0.0", {"a": 1, "b": [1, 2]}, {"x": {}}, "raw"),
        dedup_key("s", "echo", "1.0.0", {"a": 1, "b": [1, 2]}, None, "document"),
    ]
    assert len({key, *others}) == 7
