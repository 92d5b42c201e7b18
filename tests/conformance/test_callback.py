"""Checklist K: the callback class (/conf/callback), with a throw-away local receiver."""

from __future__ import annotations

import json

import pytest

from tests.conformance.conftest import (
    CONF,
    ECHO,
    Api,
    Receiver,
    check_exception,
    free_port,
    modes,
)


@modes()
def test_callback_declared(api: Api) -> None:
    assert CONF + "callback" in api.get("/conformance").json()["conformsTo"]


@modes()
def test_callback_success_and_in_progress(api: Api, receiver: Receiver) -> None:
    prefix, subscriber = receiver.subscriber()
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": 0.5}, subscriber=subscriber)
    success = receiver.wait(f"{prefix}/s")
    assert success.method == "POST"
    assert success.headers.get("Content-Type", "").startswith("application/json")
    assert "teststring" in json.dumps(success.json())
    assert api.final(job_id)["status"] == "successful"
    paths = [call.path for call in receiver.calls if call.path.startswith(prefix)]
    assert f"{prefix}/f" not in paths
    assert f"{prefix}/p" in paths, paths
    assert paths.index(f"{prefix}/p") < paths.index(f"{prefix}/s"), paths
    progress = receiver.calls_to(f"{prefix}/p")[0].json()
    assert progress["jobID"] == job_id, progress


@modes()
def test_callback_failed(api: Api, receiver: Receiver) -> None:
    prefix, subscriber = receiver.subscriber()
    before = api.job_processes()
    job_id = api.submit("fail", {"message": "callback-boom"}, subscriber=subscriber)
    failed = receiver.wait(f"{prefix}/f")
    assert failed.method == "POST"
    assert "callback-boom" in json.dumps(failed.json())
    assert api.final(job_id)["status"] == "failed"
    api.wait_jobs_ended(before)  # (the job's process sends its callbacks)
    assert not receiver.calls_to(f"{prefix}/s")


@modes(
    stock="pygeoapi's execute handler requires successUri, as the 1.0 schema does; 2.0 "
    "drops that (checklist 102, lenient for 1.0)"
)
def test_callback_only_failed_uri(api: Api, receiver: Receiver) -> None:
    prefix, subscriber = receiver.subscriber()
    only_failed = {"failedUri": subscriber["failedUri"]}
    job_id = api.submit("fail", {"message": "only-failed"}, subscriber=only_failed)
    assert "only-failed" in json.dumps(receiver.wait(f"{prefix}/f").json())
    assert api.final(job_id)["status"] == "failed"


@modes(stock="pygeoapi's execute handler requires successUri (checklist 102)")
def test_callback_only_in_progress_uri(api: Api, receiver: Receiver) -> None:
    prefix, subscriber = receiver.subscriber()
    before = api.job_processes()
    job_id = api.submit("echo", ECHO, subscriber={"inProgressUri": subscriber["inProgressUri"]})
    assert receiver.wait(f"{prefix}/p").method == "POST"
    assert api.final(job_id)["status"] == "successful"
    api.wait_jobs_ended(before)  # (the job's process sends its callbacks)
    assert not receiver.calls_to(f"{prefix}/s")


@modes()
def test_callback_receiver_error_does_not_fail_the_job(api: Api, receiver: Receiver) -> None:
    prefix, subscriber = receiver.subscriber()
    receiver.fail_paths.add(f"{prefix}/s")
    job_id = api.submit("echo", {"echoInput": "teststring"}, subscriber=subscriber)
    receiver.wait(f"{prefix}/s")
    assert api.final(job_id)["status"] == "successful"


@modes()
def test_callback_unreachable_does_not_fail_the_job(api: Api) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    job_id = api.submit("echo", {"echoInput": "teststring"}, subscriber={"successUri": f"{dead}/s"})
    assert api.final(job_id)["status"] == "successful"


@modes()
@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "http://10.1.2.3/hook", "http://169.254.169.254/latest"]
)
def test_callback_refused_uris(api: Api, url: str) -> None:
    before = len(api.all_jobs())
    check_exception(api.execute("echo", {"echoInput": "x"}, subscriber={"successUri": url}), 400)
    assert len(api.all_jobs()) == before
