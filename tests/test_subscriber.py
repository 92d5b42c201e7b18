"""Callbacks: subscriber URLs are checked at submit and called from the job."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun

from pygeoapi_prefect import callbacks
from pygeoapi_prefect.subscriber import LABEL_SUBSCRIBER, notify_failed
from tests.conftest import ROOT, free_port, submit, wait_for, wait_until_final
from tests.test_callbacks import REAL_GETADDRINFO, RawServer, trickle


class Receiver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.calls.append((self.path, json.loads(self.rfile.read(length) or b"null")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, path: str, timeout: float = 15) -> Any:
        calls = wait_for(
            lambda: [body for got, body in list(self.calls) if got == path],
            timeout=timeout,
            interval=0.05,
            message=lambda: f"a callback to {path}; got {self.calls}",
        )
        return calls[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


def _subscriber(receiver: Receiver) -> dict[str, str]:
    return {
        "successUri": f"{receiver.url}/s",
        "inProgressUri": f"{receiver.url}/p",
        "failedUri": f"{receiver.url}/f",
    }


def test_success_and_in_progress_callbacks(client: Any, receiver: Receiver) -> None:
    job_id = submit(client, "echo", {"echoInput": "called back"}, subscriber=_subscriber(receiver))
    assert receiver.wait("/s") == {"id": "echoOutput", "value": "called back"}
    progress = receiver.wait("/p")
    assert progress["jobID"] == job_id
    assert progress["status"] == "running"
    assert [path for path, _ in receiver.calls].count("/f") == 0


def test_failed_callback(client: Any, receiver: Receiver) -> None:
    job_id = submit(client, "fail", {"message": "nope"}, subscriber=_subscriber(receiver))
    failed = receiver.wait("/f")
    assert failed["jobID"] == job_id
    assert failed["status"] == "failed"
    assert "nope" in failed["message"]
    assert "/s" not in [path for path, _ in receiver.calls]


def test_callbacks_of_a_flow_process(client: Any, receiver: Receiver) -> None:
    submit(client, "word-stats", {"text": "a a b"}, subscriber=_subscriber(receiver))
    assert receiver.wait("/s")["words"] == 3


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/x",
        "http://[::1]:8080/x",
        "ftp://example.org/x",
        "http://user:pw@127.0.0.1/x",
        "not a url",
    ],
)
def test_refused_callback_urls_are_a_400_and_no_job(client: Any, manager: Any, url: str) -> None:
    before = manager.get_jobs(limit=1)["numberMatched"]
    response = client.post(
        "/processes/echo/execution",
        json={"inputs": {"echoInput": "x"}, "subscriber": {"successUri": url}},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 400, response.data
    assert "successUri" in response.json["description"]
    assert manager.get_jobs(limit=1)["numberMatched"] == before


def test_unreachable_subscriber_does_not_change_the_job(client: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    job_id = submit(client, "echo", {"echoInput": "x"}, subscriber={"successUri": f"{dead}/s"})
    assert wait_until_final(client, job_id)["status"] == "successful"


def test_a_subscriber_that_trickles_does_not_hold_the_job_slot(
    server_factory: Any, prefect_api: str
) -> None:
    """One job slot: the first job's callback trickles its status line, one byte per 0.1 s.

    The attempt's deadline ends it, the retry is answered at once, the job's process exits
    and the second job gets the slot.
    """
    answers = itertools.count()
    slow = trickle(b"HTTP/1.1 200 ", b"x")

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        if next(answers) == 0:
            slow(conn, stop)
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    subscriber = RawServer(answer).start()
    server = server_factory(env={"PREFECT_API_URL": prefect_api}, prefect={"max_running_jobs": 1})
    try:
        server.start()
        jobs = []
        for text in ("first", "second"):
            submitted = httpx.post(
                f"{server.url}/processes/echo/execution",
                json={"inputs": {"echoInput": text}, "subscriber": {"successUri": subscriber.url}},
                headers={"Prefer": "respond-async"},
                timeout=30,
            )
            assert submitted.status_code == 201, submitted.text
            jobs.append(submitted.headers["Location"])

        def status() -> dict[str, Any]:
            return {
                url: httpx.get(url, params={"f": "json"}, timeout=30).json()["status"]
                for url in jobs
            }

        wait_for(status, lambda now: set(now.values()) == {"successful"}, timeout=120)
        wait_for(lambda: {"connections": subscriber.connections}, lambda n: n["connections"] >= 3)
    finally:
        subscriber.stop.set()
        subscriber.listener.close()


def test_a_resolver_that_hangs_gives_a_400_in_time(
    client: Any, manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host != "hang.test":
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        release.wait()
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # raising=False: without the setting the request hangs, and the test says so below.
    monkeypatch.setattr(callbacks, "RESOLVE_TIMEOUT", 0.5, raising=False)
    before = manager.get_jobs(limit=1)["numberMatched"]
    answers: list[Any] = []
    request = threading.Thread(
        target=lambda: answers.append(
            client.post(
                "/processes/echo/execution",
                json={
                    "inputs": {"echoInput": "x"},
                    "subscriber": {"successUri": "http://hang.test/"},
                },
                headers={"Prefer": "respond-async"},
            )
        ),
        daemon=True,
    )
    request.start()
    request.join(60)
    release.set()
    assert answers, "the execute request waited for a resolver that hangs"
    assert answers[0].status_code == 400, answers[0].data
    assert "did not resolve within 0.5 s" in answers[0].json["description"]
    assert manager.get_jobs(limit=1)["numberMatched"] == before


EXIT_WITH_A_STUCK_DELIVERY = """
import json, socket, threading, uuid
from prefect.client.schemas.objects import FlowRun
from pygeoapi_prefect import callbacks, subscriber

socket.getaddrinfo = lambda *args, **kwargs: threading.Event().wait() or []
callbacks.RESOLVE_TIMEOUT = 3600  # the delivery would wait an hour
subscriber.DELIVERY_GRACE = 0.5
label = json.dumps({"failedUri": "http://stuck.test/f", "allow": []})
run = FlowRun(flow_id=uuid.uuid4(), labels={subscriber.LABEL_SUBSCRIBER: label})
subscriber.notify_failed(run, "failed")
"""


def test_a_process_exits_with_a_delivery_still_stuck_after_the_grace() -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_A_STUCK_DELIVERY],
        capture_output=True,
        timeout=90,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"abandoned at exit" in done.stderr, done.stderr.decode()[-2000:]


def test_an_undelivered_callback_is_logged_without_its_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pygeoapi_prefect")
    url = f"http://127.0.0.1:{free_port()}/hook?token=s3cret"
    label = json.dumps({"failedUri": url, "allow": ["127.0.0.1/32"]})
    notify_failed(FlowRun(flow_id=uuid.uuid4(), labels={LABEL_SUBSCRIBER: label}), "failed")
    # (the sender's own line names only the host; the subscriber's, logged after it, the URL)
    wait_for(lambda: {"log": caplog.text}, lambda logged: "/hook not delivered" in logged["log"])
    assert "s3cret" not in caplog.text
