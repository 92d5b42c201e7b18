"""GET /jobs: newest first, paged by the Prefect API, every job once."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.conftest import submit, wait_until_final


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
