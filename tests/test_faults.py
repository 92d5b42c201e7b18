"""Load and faults, bounded in time: nothing accepted is lost, nothing runs forever."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import TERMINAL, migrated_home, wait_for


def _submit(url: str, process_id: str, inputs: dict[str, Any]) -> str | None:
    """Submit a job: its id when accepted, else None."""
    outcome = _try_submit(url, process_id, inputs)
    return outcome[4:] if outcome.startswith("job:") else None


def _try_submit(url: str, process_id: str, inputs: dict[str, Any]) -> str:
    """Submit a job: "job:<id>" when accepted, else what went wrong."""
    try:
        response = httpx.post(
            f"{url}/processes/{process_id}/execution",
            json={"inputs": inputs},
            headers={"Prefer": "respond-async"},
            timeout=60,
        )
    except httpx.TransportError as err:
        return f"{type(err).__name__}: {err}"
    if response.status_code != 201:
        return f"{response.status_code}: {response.text[:300]}"
    return f"job:{response.json()['jobID']}"


def _all_jobs(url: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = httpx.get(
            f"{url}/jobs", params={"f": "json", "limit": 200, "offset": offset}, timeout=60
        ).json()
        jobs += page["jobs"]
        if len(page["jobs"]) < 200:
            return jobs
        offset += 200


def _wait_all_final(url: str, job_ids: set[str], timeout: float) -> dict[str, str]:
    def statuses() -> dict[str, str]:
        return {job["jobID"]: job["status"] for job in _all_jobs(url) if job["jobID"] in job_ids}

    return wait_for(
        statuses,
        lambda found: set(found) == job_ids and set(found.values()) <= TERMINAL,
        timeout,
        interval=1,
        message="every job to be final",
    )


def test_200_concurrent_submissions_all_succeed_and_list_once(
    server_factory: Any, tmp_path: Path
) -> None:
    # On the embedded default, whose API takes writes one at a time. (A stock Prefect server
    # on SQLite, as the tests' shared one is, can keep one writer locked out for longer than
    # a write's deadline while 200 job processes record their states: that request then
    # answers 503 with Retry-After, as it should.)
    server = server_factory(env=_embedded_env(tmp_path))
    _start_embedded(server)
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(
            pool.map(lambda i: _try_submit(server.url, "hello-world", {"name": str(i)}), range(200))
        )
    refused = [outcome for outcome in outcomes if not outcome.startswith("job:")]
    assert not refused, f"{len(refused)} submissions refused or failed, e.g. {refused[:3]}"
    accepted = {outcome[4:] for outcome in outcomes}
    assert len(accepted) == 200
    statuses = _wait_all_final(server.url, accepted, timeout=300)
    assert set(statuses.values()) == {"successful"}
    listed = [job["jobID"] for job in _all_jobs(server.url) if job["jobID"] in accepted]
    assert sorted(listed) == sorted(accepted), "every job listed exactly once"


def test_killing_the_server_mid_load_loses_no_accepted_job(
    server_factory: Any, prefect_api: str
) -> None:
    server = server_factory(env={"PREFECT_API_URL": prefect_api})
    server.start()
    # warm up (the launcher, the result block): the kill should hit jobs, not start-up
    assert _submit(server.url, "echo", {"echoInput": "warm", "pause": 0}) is not None
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [
            pool.submit(_submit, server.url, "echo", {"echoInput": str(i), "pause": 2})
            for i in range(30)
        ]
        wait_for(
            lambda: sum(f.done() for f in futures),
            lambda done: done >= 10,
            timeout=60,
            interval=0.05,
            message="10 submissions answered",
        )
        # The whole machine's view of it goes: server, launcher and every job process.
        assert server.process is not None
        family = psutil.Process(server.process.pid).children(recursive=True)
        os.killpg(server.process.pid, signal.SIGKILL)
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        server.process.wait(10)
        server.process = None
        accepted = {job_id for f in futures if (job_id := f.result()) is not None}
    assert accepted, "some jobs were accepted before the kill"

    crashed_at = time.monotonic()
    server.start()
    statuses = _wait_all_final(server.url, accepted, timeout=120)
    recovery_seconds = time.monotonic() - crashed_at
    assert set(statuses.values()) <= {"successful", "failed"}
    for job_id, status in statuses.items():
        if status == "failed":
            job = httpx.get(f"{server.url}/jobs/{job_id}", params={"f": "json"}, timeout=30)
            assert "stopped" in job.json()["message"] or "exited" in job.json()["message"]
    print(f"recovered {len(accepted)} accepted jobs in {recovery_seconds:.1f} s: {statuses}")


# -- the embedded default: a web server, its job processes and its Prefect API apart -------


SLOW_STARTS = pytest.mark.timeout(900)
"""For tests that cold-start embedded Prefect APIs (each can take a minute on a busy machine)."""


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PREFECT_API_URL": "",
        "PREFECT_HOME": migrated_home(tmp_path / "prefect-home"),
        # (a cold start on a loaded machine can outlast Prefect's default 20 s)
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }


def _start_embedded(server: Any) -> None:
    """Start the server, and its embedded Prefect API (which starts at first use)."""
    server.start()
    wait_for(lambda: _jobs_answer(server.url), lambda answer: answer["http"] == 200, timeout=240)


def _embedded_api(server: Any) -> psutil.Process:
    """The embedded Prefect API's process: the web server's uvicorn child."""
    assert server.process is not None
    family = psutil.Process(server.process.pid).children(recursive=True)
    apis = [process for process in family if "uvicorn" in _command(process)]
    assert len(apis) == 1, family
    return apis[0]


def _command(process: psutil.Process) -> str:
    """A process's command line; empty for one that is gone or a zombie (a killed API)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _api_access(api: psutil.Process, home: Path) -> tuple[str, dict[str, str]]:
    """The embedded API's URL, and the headers that authenticate to it (from its record)."""
    command = api.cmdline()
    url = f"http://127.0.0.1:{command[command.index('--port') + 1]}/api"
    record = home / "pygeoapi-embedded-api.json"
    if not record.exists():
        return url, {}
    token = base64.b64encode(json.loads(record.read_text())["auth_string"].encode()).decode()
    return url, {"Authorization": f"Basic {token}"}


def _job(url: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/jobs/{job_id}", params={"f": "json"}, timeout=60)
    return {"http": response.status_code, **response.json()}


def _get_json(url: str) -> httpx.Response:
    return httpx.get(url, params={"f": "json"}, timeout=30)


def _jobs_answer(url: str) -> dict[str, Any]:
    """`GET /jobs`: its status code, or the client's error."""
    try:
        return {"http": httpx.get(f"{url}/jobs", params={"f": "json"}, timeout=30).status_code}
    except httpx.TransportError as err:
        return {"http": type(err).__name__}


@SLOW_STARTS
def test_a_killed_web_server_s_running_jobs_are_adopted_by_the_next_one(
    server_factory: Any, tmp_path: Path
) -> None:
    """Only the pygeoapi process dies: its job processes live on, and its successor on the
    same PREFECT_HOME adopts them: they report there, and a DELETE stops them."""
    home = tmp_path / "prefect-home"
    server = server_factory(env=_embedded_env(tmp_path))
    _start_embedded(server)
    long_job = _submit(server.url, "echo", {"echoInput": "long", "pause": 600})
    short_job = _submit(server.url, "echo", {"echoInput": "short", "pause": 45})
    assert long_job is not None and short_job is not None
    api_url, headers = _api_access(_embedded_api(server), home)

    def job_pids() -> dict[str, Any]:
        return {
            job_id: httpx.get(f"{api_url}/flow_runs/{job_id}", headers=headers, timeout=30)
            .json()["labels"]
            .get("pygeoapi.job-pid")
            for job_id in (long_job, short_job)
        }

    pids = wait_for(job_pids, lambda found: all(found.values()), timeout=60)
    long_process = psutil.Process(pids[long_job])

    # The pygeoapi process alone (the one serving, under Flask's reloader, which then
    # exits): its launcher and job processes live on.
    serving = _embedded_api(server).parent()
    assert serving is not None and server.process is not None
    serving.kill()
    server.process.wait(30)
    server.process = None
    assert long_process.is_running()
    _start_embedded(server)

    dismissed = httpx.delete(f"{server.url}/jobs/{long_job}", params={"f": "json"}, timeout=60)
    assert dismissed.status_code == 200, dismissed.text
    wait_for(lambda: _job(server.url, long_job), lambda job: job["status"] == "dismissed")
    _, alive = psutil.wait_procs([long_process], timeout=30)
    assert not alive, "the dismissed job's process was not stopped"

    short = wait_for(
        lambda: _job(server.url, short_job), lambda job: job["status"] in TERMINAL, timeout=180
    )
    assert short["status"] == "successful", short
    results = httpx.get(f"{server.url}/jobs/{short_job}/results", params={"f": "json"}, timeout=30)
    assert results.json() == {"id": "echoOutput", "value": "short"}


@SLOW_STARTS
def test_a_hung_prefect_api_answers_503_with_retry_after_within_the_read_deadline(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(env=_embedded_env(tmp_path), prefect={"api_read_timeout": 2})
    _start_embedded(server)
    job_id = _submit(server.url, "echo", {"echoInput": "x", "pause": 0})
    assert job_id is not None
    wait_for(lambda: _job(server.url, job_id), lambda job: job["status"] in TERMINAL, timeout=180)
    api = _embedded_api(server)
    api.suspend()  # SIGSTOP: connections are accepted by the kernel, never answered
    try:
        # (the client's timeout bounds each request well below what they took before)
        requests = [("/jobs", 1), (f"/jobs/{job_id}", 1), (f"/jobs/{job_id}", 5)]
        for path, concurrent in requests:
            started = time.monotonic()
            url = f"{server.url}{path}"
            with ThreadPoolExecutor(concurrent) as pool:
                answers = list(pool.map(_get_json, [url] * concurrent))
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"].isdigit()
                assert "Prefect API" in answer.json()["description"]
            print(f"{concurrent} x GET {path}: 503 in {time.monotonic() - started:.1f} s")
    finally:
        api.resume()
    wait_for(lambda: _jobs_answer(server.url), lambda answer: answer["http"] == 200)


@SLOW_STARTS
def test_a_dead_embedded_api_is_restarted_where_jobs_find_it(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(env=_embedded_env(tmp_path))
    _start_embedded(server)
    before = _submit(server.url, "echo", {"echoInput": "before", "pause": 0})
    assert before is not None
    wait_for(lambda: _job(server.url, before), lambda job: job["status"] in TERMINAL, timeout=180)
    api = _embedded_api(server)
    api_url, headers = _api_access(api, tmp_path / "prefect-home")
    api.kill()
    api.wait(10)

    started = time.monotonic()
    wait_for(lambda: _jobs_answer(server.url), lambda answer: answer["http"] == 200, timeout=120)
    print(f"GET /jobs answers again {time.monotonic() - started:.1f} s after the API was killed")
    restarted = _embedded_api(server)
    assert restarted.pid != api.pid
    assert _api_access(restarted, tmp_path / "prefect-home") == (api_url, headers)
    # The job launcher reaches the restarted API: a new job runs to the end.
    after = _submit(server.url, "echo", {"echoInput": "after", "pause": 0})
    assert after is not None
    job = wait_for(
        lambda: _job(server.url, after), lambda job: job["status"] in TERMINAL, timeout=120
    )
    assert job["status"] == "successful", job
    # Only those with its auth string may use it; health probes excepted.
    assert httpx.post(f"{api_url}/flow_runs/filter", json={}, timeout=30).status_code == 401
    assert httpx.get(f"{api_url}/health", timeout=30).status_code == 200
