"""Servers and helpers of the black-box conformance suites (/work/shared/ogc-checklist.md).

Two real servers run for the whole session, over the session's Prefect API:

- `stock`: `pygeoapi serve` with `PrefectManager` (pygeoapi's own API layer);
- `full`: `pygeoapi-prefect serve --pygeoapi-config FILE` (full conformance mode).

Every test talks HTTP/1.1 to them with httpx. A test runs in the modes given by
`modes(...)`; where pygeoapi's API layer cannot do what the checklist asks, the stock
variant is a strict xfail, so the suite notices when the gap closes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import psutil
import pytest
import yaml

from tests.conftest import Server, free_port, wait_for, write_config

CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
EXC = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
STATUS = {"accepted", "running", "successful", "failed", "dismissed"}
TERMINAL = {"successful", "failed", "dismissed"}
ORDER = {"accepted": 0, "running": 1, "successful": 2, "failed": 2, "dismissed": 2}
ZOMBIE = psutil.STATUS_ZOMBIE

ROOT = Path(__file__).resolve().parents[2]
PYGEOAPI_PREFECT = str(Path(sys.executable).parent / "pygeoapi-prefect")
ECHO = {"echoInput": "teststring"}
SLOW_PAUSE = 6
"""Seconds the slow echo job pauses (the checklist's SLOW_BODY)."""

TEST_MAX_BODY = 1_000_000
"""`prefect.max_body_bytes` set on the servers when the manager knows that option."""


def _manager_knows(option: str) -> bool:
    from pygeoapi_prefect.settings import ManagerSettings

    return option in ManagerSettings.model_fields


MAX_BODY_CONFIGURED = _manager_knows("max_body_bytes")


def stock_gap(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"pygeoapi's API layer: {reason}")


def modes(stock: str | None = None) -> pytest.MarkDecorator:
    """Parametrize a test over both servers; `stock`: why the stock variant must fail."""
    stock_param = pytest.param("stock", marks=stock_gap(stock)) if stock else pytest.param("stock")
    return pytest.mark.parametrize("mode", [stock_param, pytest.param("full")])


full_only = pytest.mark.parametrize("mode", ["full"])


# -- servers ------------------------------------------------------------------------------


class FullServer(Server):
    """`pygeoapi-prefect serve --pygeoapi-config FILE` in a subprocess."""

    def command(self) -> list[str]:
        return [PYGEOAPI_PREFECT, "serve", "--pygeoapi-config", str(self.config)]


def _make(kind: type[Server], directory: Path, results: Path, prefect_api: str) -> Server:
    # Both servers share the Prefect API, hence its result storage block: one output_dir.
    path = write_config(directory, port=free_port(), output_dir=str(results))
    if MAX_BODY_CONFIGURED:
        config = yaml.safe_load(path.read_text())
        config["server"]["manager"]["prefect"]["max_body_bytes"] = TEST_MAX_BODY
        path.write_text(yaml.safe_dump(config))
    # PYTHONPATH: the repository root (the config's tests.processes.BinaryProcessor).
    return kind(path, {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="session")
def servers(
    tmp_path_factory: pytest.TempPathFactory, prefect_api: str
) -> Iterator[dict[str, Server]]:
    """Both servers, started side by side; one that does not start fails its mode's tests."""
    results = tmp_path_factory.mktemp("results")
    made = {
        "stock": _make(Server, tmp_path_factory.mktemp("stock"), results, prefect_api),
        "full": _make(FullServer, tmp_path_factory.mktemp("full"), results, prefect_api),
    }
    errors: dict[str, BaseException] = {}

    def start(name: str) -> None:
        try:
            made[name].start()
        except BaseException as err:  # reported below, in the test session's thread
            errors[name] = err

    threads = [threading.Thread(target=start, args=(name,)) for name in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        started = {name: server for name, server in made.items() if name not in errors}
        yield {**started, **{f"{name}-error": err for name, err in errors.items()}}  # type: ignore[dict-item]
    finally:
        for server in made.values():
            server.stop()


def _server(servers: dict[str, Any], mode: str) -> Server:
    if f"{mode}-error" in servers:
        raise servers[f"{mode}-error"]
    server: Server = servers[mode]
    return server


@pytest.fixture(scope="session")
def stock_server(servers: dict[str, Any]) -> Server:
    return _server(servers, "stock")


@pytest.fixture(scope="session")
def full_server(servers: dict[str, Any]) -> Server:
    return _server(servers, "full")


# -- client -------------------------------------------------------------------------------


@dataclass
class Api:
    """An HTTP/1.1 client of one server, with the checklist's helpers."""

    mode: str
    base: str
    http: httpx.Client
    server: Server

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", {"Accept": "application/json"})
        return self.http.get(self._url(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(self._url(path), **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(self._url(path), **kwargs)

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}{path}"

    def execute(
        self,
        process: str,
        inputs: dict[str, Any],
        *,
        asynchronous: bool = True,
        **body: Any,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if asynchronous:
            headers["Prefer"] = "respond-async"
        return self.post(
            f"/processes/{process}/execution",
            content=json.dumps({"inputs": inputs, **body}),
            headers=headers,
        )

    def submit(self, process: str, inputs: dict[str, Any], **body: Any) -> str:
        """H-async: execute asynchronously, return the job id."""
        response = self.execute(process, inputs, **body)
        assert response.status_code == 201, response.text
        job_id = job_id_of(response.json())
        assert response.headers["Location"].rstrip("/").split("/")[-1] == job_id
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def poll(self, job_id: str, timeout: float = 60, interval: float = 0.2) -> list[dict[str, Any]]:
        """H-poll: every status document observed until the job is final."""
        seen: list[dict[str, Any]] = []

        def read() -> dict[str, Any]:
            seen.append(self.status(job_id))
            return seen[-1]

        wait_for(
            read,
            lambda doc: doc["status"] in TERMINAL,
            timeout,
            interval,
            message=f"job {job_id} to be final",
        )
        return seen

    def final(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.poll(job_id, timeout)[-1]

    def wait_status(self, job_id: str, wanted: set[str], timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: self.status(job_id),
            lambda doc: doc["status"] in wanted,
            timeout,
            message=f"job {job_id} to reach {wanted}",
        )

    def job_processes(self) -> set[psutil.Process]:
        """The job processes the server runs now: its descendants that lead a process group."""
        assert self.server.process is not None
        try:
            descendants = psutil.Process(self.server.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        found = set()
        for process in descendants:
            try:
                if os.getpgid(process.pid) == process.pid and process.status() != ZOMBIE:
                    found.add(process)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        return found

    def wait_jobs_ended(self, before: set[psutil.Process], timeout: float = 60) -> None:
        """Wait until every job process started since `before` has ended.

        Then none of those jobs can record a state or send a callback any more.
        """
        wait_for(
            lambda: self.job_processes() - before,
            lambda running: not running,
            timeout,
            interval=0.1,
            message="the job processes started since to end",
        )

    def jobs_page(self, params: Any = None, url: str | None = None) -> dict[str, Any]:
        response = self.get(url) if url is not None else self.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return dict(response.json())

    def walk(
        self, params: Any = None, max_pages: int = 500
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Follow `next` links from `/jobs?params`; the ids in order and every page."""
        pages = [self.jobs_page(params)]
        while (nxt := link(pages[-1], "next")) is not None:
            assert len(pages) < max_pages, "next links do not end"
            pages.append(self.jobs_page(url=nxt["href"]))
        ids = [job_id_of(job) for page in pages for job in page["jobs"]]
        return ids, pages

    def all_jobs(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every job matching `params`, in one big page (limit 1000)."""
        page = self.jobs_page({**(params or {}), "limit": 1000})
        return list(page["jobs"])


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(http1=True, http2=False, follow_redirects=False, timeout=60) as client:
        yield client


@pytest.fixture
def api(mode: str, request: pytest.FixtureRequest, http: httpx.Client) -> Api:
    server: Server = request.getfixturevalue(f"{mode}_server")
    return Api(mode, server.url, http, server)


# -- helpers ------------------------------------------------------------------------------


def job_id_of(doc: dict[str, Any]) -> str:
    return str(doc.get("jobID") or doc.get("id"))


def link(doc: dict[str, Any], rel: str) -> dict[str, Any] | None:
    for item in doc.get("links") or []:
        if item.get("rel") == rel:
            return dict(item)
    return None


def links(doc: dict[str, Any], rel: str) -> list[dict[str, Any]]:
    return [dict(item) for item in doc.get("links") or [] if item.get("rel") == rel]


def is_json(response: httpx.Response) -> bool:
    media = response.headers.get("content-type", "").split(";")[0].strip()
    return media in {"application/json", "application/problem+json"}


def check_exception(
    response: httpx.Response, status: int, type_: str | None = None
) -> dict[str, Any]:
    """H-exc: the status, a JSON exception with a string `type` (and `status` if present)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert is_json(response), response.headers.get("content-type")
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("type"), str), body
    if type_ is not None:
        assert body["type"] == type_, body
    if isinstance(body.get("status"), int):
        assert body["status"] == status, body
    return dict(body)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_status_info(doc: dict[str, Any]) -> None:
    """H-status (1.0 statusInfo.yaml)."""
    assert isinstance(doc.get("jobID"), str) and doc["jobID"], doc
    assert doc.get("status") in STATUS, doc
    assert doc.get("type") == "process", doc
    if "processID" in doc:
        assert isinstance(doc["processID"], str)
    if doc.get("message") is not None:
        assert isinstance(doc["message"], str)
    for key in ("created", "started", "finished", "updated"):
        if doc.get(key) is not None:
            parse_time(doc[key])
            assert doc[key].endswith("Z") or "+" in doc[key][10:] or "-" in doc[key][10:], doc[key]
    if doc.get("progress") is not None:
        assert isinstance(doc["progress"], int) and 0 <= doc["progress"] <= 100, doc
    for item in doc.get("links") or []:
        assert isinstance(item.get("href"), str) and isinstance(item.get("rel"), str), item


def query_of(href: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(href).query, keep_blank_values=True)


# -- a callback receiver ------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class Receiver:
    """A throw-away HTTP listener on 127.0.0.1 recording every request (K)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail_paths: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.calls.append(
                    Call(self.command, self.path, dict(self.headers.items()), body)
                )
                code = 500 if self.path in receiver.fail_paths else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_GET = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def subscriber(self) -> tuple[str, dict[str, str]]:
        """A fresh prefix and the subscriber mapping under it."""
        prefix = f"/{uuid.uuid4().hex}"
        return prefix, {
            "successUri": f"{self.url}{prefix}/s",
            "inProgressUri": f"{self.url}{prefix}/p",
            "failedUri": f"{self.url}{prefix}/f",
        }

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in list(self.calls) if call.path == path]

    def wait(self, path: str, timeout: float = 30) -> Call:
        calls = wait_for(
            lambda: self.calls_to(path),
            timeout=timeout,
            interval=0.05,
            message=lambda: f"a callback to {path}; got {[c.path for c in self.calls]}",
        )
        return calls[0]


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


# -- jobs seeded once per server, for the job-list suites -----------------------------------


@dataclass
class Seeds:
    """Jobs of known kinds, created in this order, a little apart."""

    before: str
    echo: list[str]
    failed: str
    words: str
    long: str
    dismissed: str
    after: str
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [
            self.before,
            *self.echo,
            self.failed,
            self.words,
            self.long,
            self.dismissed,
            self.after,
        ]

    def window(self) -> list[str]:
        """Every seed but the first and the last."""
        return self.ids()[1:-1]


_SEEDS: dict[str, Seeds] = {}


def seeds_of(api: Api) -> Seeds:
    """Seed the job list of `api`'s server once: successful, failed, dismissed jobs."""
    if api.mode in _SEEDS:
        return _SEEDS[api.mode]

    def spaced(process: str, inputs: dict[str, Any]) -> str:
        time.sleep(0.05)
        return api.submit(process, inputs)

    before = spaced("echo", {"echoInput": "before"})
    long = spaced("echo", {"echoInput": "long", "pause": 2.5})
    echo = [spaced("echo", {"echoInput": f"seed {n}"}) for n in range(3)]
    failed = spaced("fail", {"message": "seeded failure"})
    words = spaced("word-stats", {"text": "a b a"})
    dismissed = spaced("echo", {"echoInput": "dismissed", "pause": 30})
    api.wait_status(dismissed, {"running"})
    assert api.delete(f"/jobs/{dismissed}").status_code == 200
    after = spaced("echo", {"echoInput": "after"})
    seeds = Seeds(before, echo, failed, words, long, dismissed, after)
    for job_id in seeds.ids():
        seeds.docs[job_id] = api.final(job_id)
    assert seeds.docs[failed]["status"] == "failed"
    assert seeds.docs[dismissed]["status"] == "dismissed"
    assert all(seeds.docs[j]["status"] == "successful" for j in [before, *echo, words, long, after])
    _SEEDS[api.mode] = seeds
    return seeds


def duration(doc: dict[str, Any], now: datetime | None = None) -> float | None:
    """A job's duration: finished - started, or now - started while it runs."""
    if not doc.get("started"):
        return None
    end = parse_time(doc["finished"]) if doc.get("finished") else now
    if end is None:
        end = datetime.now(tz=parse_time(doc["started"]).tzinfo)
    return (end - parse_time(doc["started"])).total_seconds()


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- the report per conformance class ---------------------------------------------------------

_CLASS_OF_FILE = {
    "test_outputs.py": "core",
    "test_job_list.py": "job-list",
    "test_properties.py": "job-list",
    "test_dismiss.py": "dismiss",
    "test_callback.py": "callback",
    "test_hostile.py": "hostile input",
}
_CLASS_OF_PREFIX = {
    "test_procdesc_": "ogc-process-description",
    "test_json_": "json",
    "test_oas_": "oas30",
}


def _conformance_class(item: pytest.Item) -> str | None:
    path = Path(str(item.fspath))
    if path.parent != Path(__file__).parent:
        return None
    if path.name == "test_core.py":
        name = getattr(item, "originalname", item.name)
        return next((c for p, c in _CLASS_OF_PREFIX.items() if name.startswith(p)), "core")
    return _CLASS_OF_FILE.get(path.name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Record, per conformance class and server mode, whether each test passed."""
    outcome = yield
    report = outcome.get_result()
    kind = _conformance_class(item)
    if kind is None or not (report.when == "call" or (report.when == "setup" and report.failed)):
        return
    if report.skipped and not hasattr(report, "wasxfail"):
        return  # not applicable here (e.g. no sync-only process is configured)
    callspec = getattr(item, "callspec", None)
    mode = callspec.params.get("mode", "full") if callspec is not None else "full"
    passed = report.passed and not hasattr(report, "wasxfail")
    # (carried on the report, so that pytest-xdist's controller, which prints the summary,
    # gets it from its workers)
    report.user_properties.append(("conformance", f"{kind}|{mode}|{int(passed)}"))
