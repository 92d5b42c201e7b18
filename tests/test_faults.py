"""Load and faults, bounded in time: nothing accepted is lost, nothing runs forever."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil


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
    deadline = time.monotonic() + timeout
    while True:
        statuses = {
            job["jobID"]: job["status"] for job in _all_jobs(url) if job["jobID"] in job_ids
        }
        if (
            all(s in {"successful", "failed", "dismissed"} for s in statuses.values())
            and set(statuses) == job_ids
        ):
            return statuses
        assert time.monotonic() < deadline, f"not final after {timeout} s: {statuses}"
        time.sleep(1)


def test_200_concurrent_submissions_all_succeed_and_list_once(
    server_factory: Any, prefect_api: str
) -> None:
    server = server_factory(env={"PREFECT_API_URL": prefect_api})
    server.start()
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
        deadline = time.monotonic() + 60
        while sum(f.done() for f in futures) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
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
