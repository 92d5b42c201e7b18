"""The figures, measured over HTTP against one running pygeoapi server (loopback only)."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.servers import Managed, tree_memory

HELLO = {"inputs": {"name": "x"}}
ASYNC = {"Prefer": "respond-async"}
FINAL = {"successful", "failed", "dismissed"}
POLL_S = 0.02
SUBMIT_TIMEOUT_S = 120


def summary(samples: list[float]) -> dict[str, Any]:
    """Median and spread of latencies in seconds, reported in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return {"n": 0, "median": None}
    return {
        "n": len(ms),
        "median": round(statistics.median(ms), 2),
        "p90": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 2),
        "min": round(ms[0], 2),
        "max": round(ms[-1], 2),
    }


def _job_id(response: httpx.Response) -> str:
    location = response.headers.get("Location", "")
    if location:
        return location.rstrip("/").rsplit("/", 1)[-1]
    body = response.json()
    return str(body.get("jobID") or body.get("id"))


def submit(client: httpx.Client, process: str, body: dict[str, Any]) -> str:
    response = client.post(f"/processes/{process}/execution", json=body, headers=ASYNC)
    if response.status_code != 201:
        raise RuntimeError(f"async submit answered {response.status_code}: {response.text[:300]}")
    return _job_id(response)


def status_of(client: httpx.Client, job_id: str) -> tuple[int, str | None]:
    response = client.get(f"/jobs/{job_id}")
    if response.status_code != 200:
        return response.status_code, None
    return 200, response.json().get("status")


def wait_status(
    client: httpx.Client, job_id: str, wanted: set[str], timeout: float, interval: float = POLL_S
) -> str | None:
    """Poll a job until its status is in `wanted` (or final); return the last status."""
    deadline = time.perf_counter() + timeout
    status: str | None = None
    while time.perf_counter() < deadline:
        code, status = status_of(client, job_id)
        if code == 404:
            return "404"
        if status in wanted or status in FINAL:
            return status
        time.sleep(interval)
    return status


def warm_up(client: httpx.Client, timeout: float = 90) -> dict[str, Any]:
    """First sync and async executes of each process (the first one of ours starts Prefect)."""
    start = time.perf_counter()
    first = client.post("/processes/hello-world/execution", json=HELLO, timeout=timeout)
    first_s = time.perf_counter() - start
    if first.status_code != 200:
        raise RuntimeError(f"first execute answered {first.status_code}: {first.text[:500]}")
    for _ in range(3):
        client.post("/processes/hello-world/execution", json=HELLO, timeout=60)
        client.post("/processes/echo/execution", json={"inputs": {"echoInput": "warm"}}, timeout=60)
        job = submit(client, "hello-world", HELLO)
        wait_status(client, job, {"successful"}, timeout=60)
    return {"first_execute_s": round(first_s, 2)}


def first_sync_execute(client: httpx.Client, timeout: float = 120) -> dict[str, Any]:
    """The first sync execute of a server that has just answered its landing page."""
    start = time.perf_counter()
    response = client.post("/processes/hello-world/execution", json=HELLO, timeout=timeout)
    elapsed = time.perf_counter() - start
    if response.status_code != 200 or "Hello x" not in response.text:
        raise RuntimeError(f"first execute answered {response.status_code}: {response.text[:300]}")
    return {"first_execute_s": round(elapsed, 2)}


def first_async_job(client: httpx.Client, timeout: float = 120) -> dict[str, Any]:
    """The first async job of a server that has just answered its landing page.

    Returns the time of its submission (until the 201) and from submission until
    `GET /jobs/{id}` reads `successful`.
    """
    start = time.perf_counter()
    job = submit(client, "hello-world", HELLO)
    submitted = time.perf_counter() - start
    status = wait_status(client, job, {"successful"}, timeout=timeout)
    elapsed = time.perf_counter() - start
    if status != "successful":
        raise RuntimeError(f"first async job ended {status!r}")
    return {"submit_s": round(submitted, 2), "successful_s": round(elapsed, 2)}


def sync_execute(client: httpx.Client, reps: int) -> dict[str, Any]:
    samples = []
    errors = 0
    for _ in range(reps):
        start = time.perf_counter()
        response = client.post("/processes/hello-world/execution", json=HELLO, timeout=120)
        samples.append(time.perf_counter() - start)
        if response.status_code != 200 or "Hello x" not in response.text:
            errors += 1
    return {**summary(samples), "errors": errors}


def async_submit(client: httpx.Client, reps: int) -> tuple[dict[str, Any], list[str]]:
    samples = []
    jobs = []
    for _ in range(reps):
        start = time.perf_counter()
        jobs.append(submit(client, "hello-world", HELLO))
        samples.append(time.perf_counter() - start)
    return summary(samples), jobs


def submit_to_successful(client: httpx.Client, reps: int) -> dict[str, Any]:
    samples = []
    failures = Counter[str]()
    for _ in range(reps):
        start = time.perf_counter()
        job = submit(client, "hello-world", HELLO)
        status = wait_status(client, job, {"successful"}, timeout=60)
        elapsed = time.perf_counter() - start
        if status == "successful":
            samples.append(elapsed)
        else:
            failures[str(status)] += 1
    return {**summary(samples), "not_successful": dict(failures)}


def list_all_jobs(client: httpx.Client, page: int = 100) -> list[str]:
    """Page through GET /jobs (limit/offset) until a short page; every job id seen, in order.

    pygeoapi's job list has no numberMatched, so a short page marks the end.
    """
    ids: list[str] = []
    offset = 0
    for _ in range(1000):
        response = client.get("/jobs", params={"limit": page, "offset": offset}, timeout=120)
        response.raise_for_status()
        jobs = response.json().get("jobs", [])
        ids.extend(str(job["jobID"]) for job in jobs)
        offset += page
        if len(jobs) < page:
            break
    return ids


def throughput(
    base_url: str, server: Managed, total: int = 200, clients: int = 20, timeout: float = 300
) -> dict[str, Any]:
    """`total` async jobs from `clients` threads; jobs/s from first submit to all successful."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        listed_before = len(list_all_jobs(client))
    lock = threading.Lock()
    submit_latencies: list[float] = []
    todo = list(range(total))
    submitted: list[str] = []
    outcome: dict[str, str] = {}
    submit_errors: list[str] = []
    first_submit: list[float] = []
    last_done: list[float] = []
    deadline = time.perf_counter() + timeout

    def client_thread() -> None:
        mine: list[str] = []
        with httpx.Client(base_url=base_url, timeout=SUBMIT_TIMEOUT_S) as client:
            while True:
                with lock:
                    if not todo or time.perf_counter() > deadline:
                        break
                    todo.pop()
                    if not first_submit:
                        first_submit.append(time.perf_counter())
                sent = time.perf_counter()
                try:
                    job = submit(client, "hello-world", HELLO)
                except Exception as err:
                    with lock:
                        submit_latencies.append(time.perf_counter() - sent)
                    with lock:
                        submit_errors.append(repr(err)[:200])
                    continue
                mine.append(job)
                with lock:
                    submitted.append(job)
                    submit_latencies.append(time.perf_counter() - sent)
            # Poll my jobs in submission order; a round stops at the first unfinished one.
            while mine and time.perf_counter() < deadline:
                while mine:
                    try:
                        _, status = status_of(client, mine[0])
                    except httpx.HTTPError:
                        status = None
                    if status in FINAL:
                        with lock:
                            outcome[mine.pop(0)] = str(status)
                            last_done.append(time.perf_counter())
                    else:
                        break
                if mine:
                    time.sleep(0.2)
            # Past the deadline: one last look at each job still open.
            for job in mine:
                try:
                    _, status = status_of(client, job)
                except httpx.HTTPError:
                    status = None
                with lock:
                    if status in FINAL:
                        outcome[job] = str(status)
                        last_done.append(time.perf_counter())
                    else:
                        outcome[job] = f"timeout ({status})"

    threads = [threading.Thread(target=client_thread, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 30)
    elapsed = (max(last_done) - first_submit[0]) if last_done and first_submit else None
    statuses = Counter(outcome.values())
    successful = statuses.get("successful", 0)
    memory = tree_memory(server)
    with httpx.Client(base_url=base_url, timeout=120) as client:
        listed = list_all_jobs(client)
        failures = []
        for job, status in outcome.items():
            if status != "successful" and len(failures) < 5:
                response = client.get(f"/jobs/{job}")
                message = response.json().get("message") if response.status_code == 200 else ""
                failures.append(f"{job} {status}: {str(message)[:300]}")
    counts = Counter(listed)
    mine = set(submitted)
    lost = sum(1 for job in mine if counts[job] == 0)
    duplicated = sum(1 for job in mine if counts[job] > 1)
    return {
        "jobs": total,
        "clients": clients,
        "elapsed_s": round(elapsed, 2) if elapsed else None,
        "jobs_per_s": round(successful / elapsed, 2) if elapsed else None,
        "submitted": len(submitted),
        "not_submitted": len(todo),
        "deadline_s": timeout,
        "submit_errors": len(submit_errors),
        "submit_error_examples": submit_errors[:3],
        "statuses": dict(statuses),
        "not_successful_examples": failures,
        "successful": successful,
        "submit_latency_under_load": summary(submit_latencies),
        "listed_before": listed_before,
        "listed_total": len(listed),
        "listed_new": len(listed) - listed_before,
        "listed_duplicates_overall": sum(1 for n in counts.values() if n > 1),
        "lost": lost,
        "duplicated": duplicated,
        "memory": memory,
    }


def list_latency(client: httpx.Client, ids: list[str], reps: int) -> dict[str, Any]:
    """GET /jobs?limit=50 and GET /jobs/{id} latencies."""
    for _ in range(3):
        client.get("/jobs", params={"limit": 50}, timeout=120)
    listing = []
    bad = 0
    for _ in range(reps):
        start = time.perf_counter()
        response = client.get("/jobs", params={"limit": 50}, timeout=120)
        listing.append(time.perf_counter() - start)
        if response.status_code != 200 or len(response.json().get("jobs", [])) != 50:
            bad += 1
    one = []
    step = max(1, len(ids) // reps)
    picks = [ids[(i * step) % len(ids)] for i in range(reps)]
    for job in picks:
        start = time.perf_counter()
        response = client.get(f"/jobs/{job}", timeout=120)
        one.append(time.perf_counter() - start)
        if response.status_code != 200:
            bad += 1
    return {
        "list50": summary(listing),
        "get_one": summary(one),
        "bad_responses": bad,
        "jobs_in_store": len(ids),
    }


def dismiss(client: httpx.Client, server: Managed, output_dir: Path) -> dict[str, Any]:
    """Dismiss a running 60 s echo job; time until it reads dismissed and its process is gone."""
    before = {proc.pid for proc in server.tree()}
    job = submit(client, "echo", {"inputs": {"echoInput": "dismiss-me", "pause": 60}})
    # TinyDB's jobs read `accepted` until the processor returns: give up waiting after 10 s.
    status = wait_status(client, job, {"running"}, timeout=10, interval=0.05)
    if status in FINAL or status == "404":
        return {"job": job, "error": f"job ended before it could be dismissed ({status})"}
    time.sleep(0.5)
    job_pids = {proc.pid for proc in server.tree()} - before
    start = time.perf_counter()
    response = client.request("DELETE", f"/jobs/{job}", timeout=60)
    delete_s = time.perf_counter() - start
    result: dict[str, Any] = {
        "job": job,
        "delete_status": response.status_code,
        "delete_s": round(delete_s, 3),
        "delete_body": response.text[:200],
        "status_before_delete": status,
        "job_processes": len(job_pids),
    }
    seen: list[str] = []
    dismissed_s = None
    deadline = start + 15
    while time.perf_counter() < deadline:
        code, status = status_of(client, job)
        label = status if code == 200 else str(code)
        if not seen or seen[-1] != label:
            seen.append(str(label))
        if status == "dismissed":
            dismissed_s = time.perf_counter() - start
            break
        if code == 404 and time.perf_counter() - start > 3:
            break
        time.sleep(POLL_S)
    stopped_s = None
    if job_pids:
        while time.perf_counter() < deadline:
            if not any(psutil.pid_exists(pid) for pid in job_pids):
                stopped_s = time.perf_counter() - start
                break
            time.sleep(POLL_S)
    result.update(
        statuses_after_delete=seen,
        dismissed_s=round(dismissed_s, 3) if dismissed_s is not None else None,
        process_gone_s=round(stopped_s, 3) if stopped_s is not None else None,
        deleted_at=time.time(),
        output_dir=str(output_dir),
    )
    return result


def tinydb_leftover(result: dict[str, Any], wait_until: float = 65) -> None:
    """Whether a 'dismissed' TinyDB job still finished its work (its result file appears)."""
    job = result.get("job")
    if not job or "deleted_at" not in result:
        return
    output_dir = Path(result["output_dir"])
    deadline = result["deleted_at"] + wait_until
    while True:
        found = [p.name for p in output_dir.glob(f"*{job}*")] if output_dir.exists() else []
        if found or time.time() > deadline:
            break
        time.sleep(0.5)
    result["result_file_after_delete"] = found
    result["checked_after_s"] = round(time.time() - result["deleted_at"], 1)
