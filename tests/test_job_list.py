"""GET /jobs: newest first, paged by the Prefect API, every job once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import job_status, submit, wait_until_final


def _page(client: Any, url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200, response.data
    return dict(response.json)


def test_paging_walks_every_job_once(client: Any, manager: Any) -> None:
    created = [submit(client, "hello-world", {"name": str(i)}) for i in range(7)]
    for job_id in created:
        wait_until_final(client, job_id)
    total = manager.get_jobs(limit=1)["numberMatched"]
    assert total >= 7

    seen: list[str] = []
    page = _page(client, "/jobs?f=json&limit=3")
    while True:
        seen += [job["jobID"] for job in page["jobs"]]
        assert len(page["jobs"]) <= 3
        following = [link["href"] for link in page["links"] if link["rel"] == "next"]
        if not following:
            break
        page = _page(client, following[0])
    assert len(seen) == len(set(seen)) == total
    assert set(created) <= set(seen)


def test_manager_lists_newest_first_with_total(manager: Any, client: Any) -> None:
    first = submit(client, "hello-world", {"name": "older"})
    second = submit(client, "hello-world", {"name": "newer"})
    listing = manager.get_jobs(limit=2, offset=0)
    assert [job["identifier"] for job in listing["jobs"]] == [second, first]
    assert listing["numberMatched"] >= 2
    everything = manager.get_jobs(limit=1000)
    assert everything["numberMatched"] == len(everything["jobs"])


def test_failed_and_queued_jobs_are_listed(manager: Any, client: Any) -> None:
    failed = submit(client, "fail", {"message": "listed"})
    wait_until_final(client, failed)
    queued = manager.add_job({"process_id": "echo"})
    statuses = {job["identifier"]: job["status"] for job in manager.get_jobs(limit=1000)["jobs"]}
    assert statuses[failed] == "failed"
    assert statuses[queued] == "accepted"


def test_status_filter_is_done_by_prefect(manager: Any, client: Any) -> None:
    job_id = submit(client, "fail", {"message": "filtered"})
    wait_until_final(client, job_id)
    failed = manager.get_jobs(status="failed", limit=1000)
    assert failed["jobs"] and all(job["status"] == "failed" for job in failed["jobs"])
    assert failed["numberMatched"] == len(failed["jobs"])
    assert job_id in {job["identifier"] for job in failed["jobs"]}


def test_job_of_a_removed_process_is_no_job_of_this_server(manager: Any, client: Any) -> None:
    # A job is a flow run with this server's tag and the tag of a configured process: one
    # made while a process now removed was configured is no longer this server's.
    from prefect import flow
    from prefect.client.orchestration import get_client

    from pygeoapi_prefect.jobs import JOB_TAG, process_tag, server_tag

    @flow(name="no-longer-configured")
    def gone() -> None:
        """Never run."""

    tags = [JOB_TAG, server_tag(manager.settings.server_label), process_tag("gone")]
    with get_client(sync_client=True) as prefect:
        orphan = str(prefect.create_flow_run(gone, tags=tags).id)
    listing = client.get("/jobs?f=json&limit=1000")
    assert listing.status_code == 200
    assert orphan not in {job["jobID"] for job in listing.json["jobs"]}
    assert client.get(f"/jobs/{orphan}?f=json").status_code == 404
    assert client.delete(f"/jobs/{orphan}").status_code == 404


def test_a_job_awaiting_a_retry_is_running_when_read_and_when_filtered(
    manager: Any, client: Any
) -> None:
    # Between two attempts a flow run waits in AwaitingRetry, a SCHEDULED state: the job
    # has started, so it reads as running, and the status filter agrees.
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry
    from pygeoapi.util import JobStatus

    from pygeoapi_prefect.jobs import JobQuery

    job_id = manager.add_job({"process_id": "echo"})
    later = datetime.now(UTC) + timedelta(hours=1)
    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(job_id, AwaitingRetry(scheduled_time=later), force=True)
    try:
        assert job_status(client, job_id)["status"] == "running"

        def listed(*statuses: JobStatus) -> bool:
            jobs, _ = manager.find_jobs(JobQuery(statuses=statuses, limit=1000))
            return job_id in {job["identifier"] for job in jobs}

        running = manager.get_jobs(status="running", limit=1000)["jobs"]
        assert job_id in {job["identifier"] for job in running}
        accepted = manager.get_jobs(status="accepted", limit=1000)["jobs"]
        assert job_id not in {job["identifier"] for job in accepted}
        assert listed(JobStatus.running, JobStatus.failed)
        assert not listed(JobStatus.accepted, JobStatus.successful)
    finally:
        manager.delete_job(job_id)
