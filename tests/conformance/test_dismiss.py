"""Checklist J: the dismiss class (/conf/dismiss)."""

from __future__ import annotations

import uuid

import pytest

from tests.conformance.conftest import (
    CONF,
    ECHO,
    EXC,
    Api,
    check_exception,
    check_status_info,
    is_json,
    job_id_of,
    modes,
)

PAUSE = 5
"""Seconds the dismissed echo job would run."""


@modes(stock="/conformance does not declare dismiss")
def test_dismiss_declared(api: Api) -> None:
    assert CONF + "dismiss" in api.get("/conformance").json()["conformsTo"]


@modes()
def test_dismiss_job_control_option(api: Api) -> None:
    assert "dismiss" in api.get("/processes/echo").json()["jobControlOptions"]


@modes()
def test_dismiss_running_job(api: Api) -> None:
    before = api.job_processes()
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": PAUSE})
    api.wait_status(job_id, {"running"})
    response = api.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "dismissed"
    assert job_id_of(response.json()) == job_id
    # The work is cancelled: the job never turns successful or failed, not even once
    # its process (stopped, or at the end of its pause) has ended.
    assert api.status(job_id)["status"] == "dismissed"
    api.wait_jobs_ended(before)
    assert api.status(job_id)["status"] == "dismissed"
    check_exception(api.get(f"/jobs/{job_id}/results"), 404)


@modes(stock="DELETE answers text/html, with a statusInfo lacking `type`")
def test_dismiss_response_is_json_status_info(api: Api) -> None:
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": PAUSE})
    response = api.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert is_json(response), response.headers.get("content-type")
    check_status_info(response.json())
    assert response.json()["status"] == "dismissed"


@modes()
def test_dismiss_accepted_or_running_never_succeeds(api: Api) -> None:
    """Dismiss at once, whatever state the job is in by then (accepted, most likely)."""
    before = api.job_processes()
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": 1})
    assert api.delete(f"/jobs/{job_id}").status_code == 200
    # Jobs start oldest first: once a later one has run, the dismissed one has started
    # if it was going to; then wait for its process, if any, to end.
    assert api.final(api.submit("echo", ECHO))["status"] == "successful"
    api.wait_jobs_ended(before)
    response = api.get(f"/jobs/{job_id}")
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        assert response.json()["status"] == "dismissed"


@modes(stock="GET /jobs passes no status filter to the manager")
def test_dismiss_listed_as_dismissed(api: Api) -> None:
    # a job that must not match, whatever else the store holds
    api.final(api.submit("echo", ECHO))
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": PAUSE})
    api.wait_status(job_id, {"running"})
    assert api.delete(f"/jobs/{job_id}").status_code == 200
    jobs = api.all_jobs({"status": "dismissed"})
    assert job_id in {job_id_of(j) for j in jobs}
    assert all(j["status"] == "dismissed" for j in jobs)


@modes()
@pytest.mark.parametrize("process", ["echo", "fail"])
def test_dismiss_finished_job_removes_it(api: Api, process: str) -> None:
    job_id = api.submit(process, ECHO if process == "echo" else {"message": "x"})
    api.final(job_id)
    response = api.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "dismissed"
    check_exception(api.get(f"/jobs/{job_id}"), 404)
    check_exception(api.get(f"/jobs/{job_id}/results"), 404)
    check_exception(api.delete(f"/jobs/{job_id}"), 404)


@modes(stock="exception types are short codes (no-such-job answers InvalidParameterValue)")
def test_dismiss_removed_job_is_no_such_job(api: Api) -> None:
    job_id = api.submit("echo", ECHO)
    api.final(job_id)
    assert api.delete(f"/jobs/{job_id}").status_code == 200
    check_exception(api.get(f"/jobs/{job_id}"), 404, EXC + "no-such-job")
    check_exception(api.delete(f"/jobs/{job_id}"), 404, EXC + "no-such-job")


@modes()
def test_dismiss_unknown_job(api: Api) -> None:
    check_exception(api.delete(f"/jobs/invalid-job-{uuid.uuid4()}"), 404)


@modes(stock="exception types are short codes (NoSuchJob)")
def test_dismiss_unknown_job_type(api: Api) -> None:
    check_exception(api.delete(f"/jobs/invalid-job-{uuid.uuid4()}"), 404, EXC + "no-such-job")
