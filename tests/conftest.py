"""Shared fixtures: one real Prefect API for the session, a real pygeoapi app over it."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

ROOT = Path(__file__).resolve().parent.parent
PYGEOAPI = str(Path(sys.executable).parent / "pygeoapi")
EXAMPLE_CONFIG = ROOT / "example-config.yml"
TERMINAL = {"successful", "failed", "dismissed"}


_MIGRATED: list[Path] = []
"""A copy of a new Prefect database, already at Prefect's newest migration (see below)."""


@pytest.fixture(scope="session", autouse=True)
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect API (SQLite, in a subprocess) for the whole session."""
    with prefect_test_harness(server_startup_timeout=90):
        # The harness's database is new and migrated: copied before any test writes to it,
        # it saves each embedded-default server of the tests Prefect's hundred migrations.
        harness = PREFECT_API_DATABASE_CONNECTION_URL.value().removeprefix("sqlite+aiosqlite:///")
        copy = tmp_path_factory.mktemp("migrated") / "prefect.db"
        with sqlite3.connect(harness) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        _MIGRATED.append(copy)
        yield str(PREFECT_API_URL.value())


def migrated_home(home: Path) -> str:
    """Make `home` a PREFECT_HOME whose database is at Prefect's newest migration already.

    For tests of the embedded default that are not about its first start (a new database's
    migrations take 10-20 s; `test_cold_start` keeps them).

    Returns:
        `home`, as a string for `PREFECT_HOME`.
    """
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MIGRATED[0], home / "prefect.db")
    return str(home)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, port: int = 5000, **manager: Any) -> Path:
    """Write the example config, plus test processes, with a manager of the tests' own."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["server"]["bind"]["port"] = port
    config["server"]["url"] = f"http://127.0.0.1:{port}"
    config["server"]["manager"].update(
        {"connection": None, "output_dir": str(directory / "results"), **manager}
    )
    config["server"]["manager"].setdefault("prefect", {})["callback_allow"] = ["127.0.0.1/32"]
    config["logging"] = {"level": "WARNING"}
    config["resources"]["binary"] = {
        "type": "process",
        "processor": {"name": "tests.processes.BinaryProcessor"},
    }
    config["resources"]["kinds"] = {
        "type": "process",
        "processor": {"name": "tests.processes.KindsProcessor"},
    }
    config["resources"]["echo-one-at-a-time"] = {
        "type": "process",
        "processor": {
            "name": "pygeoapi_prefect.examples.EchoProcessor",
            "prefect": {"concurrency_limit": 1},
        },
    }
    path = directory / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(config))
    openapi = directory / "pygeoapi-openapi.yml"
    subprocess.run(
        [PYGEOAPI, "openapi", "generate", str(path), "--output-file", str(openapi)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return path


@pytest.fixture(scope="session")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pygeoapi")
    write_config(directory)
    return directory


@pytest.fixture(scope="session")
def app(config_dir: Path, prefect_api: str) -> Any:
    """pygeoapi's own Flask app, configured with PrefectManager."""
    os.environ["PYGEOAPI_CONFIG"] = str(config_dir / "pygeoapi-config.yml")
    os.environ["PYGEOAPI_OPENAPI"] = str(config_dir / "pygeoapi-openapi.yml")
    from pygeoapi.flask_app import APP

    return APP


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="session")
def manager(app: Any) -> Any:
    from pygeoapi.flask_app import api_

    return api_.manager


def wait_for[T](
    read: Callable[[], T],
    done: Callable[[T], object] = bool,
    timeout: float = 30,
    interval: float = 0.1,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll `read` until `done` holds for its value, and return that value.

    The one way tests wait: for a condition, never for a fixed time. After `timeout`
    seconds the test fails, saying what it waited for (`message`; a callable is called
    only then, e.g. for a log's tail) and the last value read.
    """
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            pytest.fail(
                f"timed out after {timeout} s{f' waiting for {what}' if what else ''}; "
                f"last value: {value}"
            )
        time.sleep(interval)
        value = read()
    return value


def submit(client: Any, process_id: str, inputs: dict[str, Any], **body: Any) -> str:
    """Execute a process asynchronously and return the job id."""
    response = client.post(
        f"/processes/{process_id}/execution",
        json={"inputs": inputs, **body},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 201, response.data
    job_id = response.json["jobID"]
    assert response.headers["Location"].endswith(f"/jobs/{job_id}")
    return str(job_id)


def job_status(client: Any, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}?f=json")
    assert response.status_code == 200, response.data
    return dict(response.json)


def wait_until_final(client: Any, job_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: job_status(client, job_id), lambda j: j["status"] in TERMINAL, timeout)


class Server:
    """`pygeoapi serve` in a subprocess, on a free loopback port."""

    def command(self) -> list[str]:
        return [PYGEOAPI, "serve"]

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env
        self.url = yaml.safe_load(config.read_text())["server"]["url"]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "server.log"

    def start(self, timeout: float = 300) -> None:
        # (the server answers once its Prefect side is ready: a new database migrates first)
        env = {
            **os.environ,
            "PYGEOAPI_CONFIG": str(self.config),
            "PYGEOAPI_OPENAPI": str(self.config.parent / "pygeoapi-openapi.yml"),
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{self.command()} exited: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(
            answers,
            timeout=timeout,
            interval=0.2,
            message=lambda: f"{self.command()} to answer: {self.log.read_text()[-3000:]}",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)
        self.process = None


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(
        env: dict[str, str] | None = None, config: Path | None = None, **manager: Any
    ) -> Server:
        path = config or write_config(tmp_path, port=free_port(), **manager)
        server = Server(path, env or {})
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# -- the conformance table (tests/conformance/conftest.py records each outcome on its report)

_outcomes: dict[tuple[str, str], list[bool]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the outcomes recorded on reports (of this process, or of xdist's workers)."""
    for name, value in report.user_properties:
        if name == "conformance":
            kind, mode, passed = str(value).split("|")
            _outcomes.setdefault((kind, mode), []).append(passed == "1")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print passed/total per conformance class and mode (an xfail is not a pass)."""
    if not _outcomes:
        return
    terminalreporter.section("OGC API - Processes conformance, passed/total")
    for kind in sorted({kind for kind, _ in _outcomes}):
        cells = []
        for mode in ("full", "stock"):
            results = _outcomes.get((kind, mode), [])
            if results:
                cells.append(f"{mode} {sum(results)}/{len(results)}")
        terminalreporter.write_line(f"{kind:26s} " + "   ".join(cells))
