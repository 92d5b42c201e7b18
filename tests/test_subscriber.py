"""Callbacks: subscriber URLs are checked at submit and called from the job."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import free_port, submit, wait_until_final


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for got, body in self.calls:
                if got == path:
                    return body
            time.sleep(0.05)
        pytest.fail(f"no callback to {path}; got {self.calls}")


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
