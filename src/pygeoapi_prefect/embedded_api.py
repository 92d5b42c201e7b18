"""The embedded default's Prefect API: Prefect's own server app on SQLite, one writer at a time.

Without a configured Prefect API, the pygeoapi process starts Prefect's server app in a
subprocess, as Prefect's ephemeral mode does (`SubprocessASGIServer`), with one change:
requests that write reach the app one at a time.

SQLite lets one transaction write at once. Prefect's app serves many requests
concurrently on one event loop, so under load its write transactions wait for each other
inside SQLite (sleeping in SQLite's busy handler while the loop is needed elsewhere) or
fail with "database is locked" (503), and the clients retry: the API spends its time
waiting. Queueing the writing requests in front of the app instead keeps each write
transaction short; reads (GET, and Prefect's POST `/filter`, `/count` and `/paginate`
queries) are not held up. Prefect's own `RequestLimitMiddleware` limits all requests on
SQLite to 100 at once for the same reason and notes that limiting writes would be better.

The API listens on loopback at a port recorded under `PREFECT_HOME` and reused at every
start while it is free, so that job processes left running by a web server that died
reach its successor at the address they know. It requires Prefect's API auth string
(`PREFECT_SERVER_API_AUTH_STRING`): a random one, recorded with the port in a file only
this user can read, and handed to the web server's own clients and job processes, so that
other local users cannot use the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.server.api.server import create_app as create_prefect_app
from prefect.settings import get_current_settings

from pygeoapi_prefect.connection import writes

__all__ = ["EmbeddedAPIServer", "create_app", "start_embedded_api"]

LOGGER = logging.getLogger(__name__)

_RECORD_NAME = "pygeoapi-embedded-api.json"
_PORT_WAIT_SECONDS = 15.0
_PARENT_VARIABLE = "PYGEOAPI_PREFECT_PARENT_PID"
_PARENT_POLL_SECONDS = 1.0
_STOP_GRACE_SECONDS = 3.0


class _OneWriterAtATime:
    """ASGI middleware: requests that may write go to the app one at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not writes(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        async with self._lock:
            await self.app(scope, receive, send)


def create_app() -> Any:
    """Return Prefect's server app behind the one-writer queue (a uvicorn factory).

    The server also stops when the pygeoapi process that started it is gone, however it
    ended (a killed web server would otherwise leave it running, holding the database).

    Returns:
        The ASGI app.
    """
    parent = os.environ.get(_PARENT_VARIABLE)
    if parent is not None and parent.isdigit():
        threading.Thread(
            target=_stop_without, args=(int(parent),), name="parent-watch", daemon=True
        ).start()
    return _OneWriterAtATime(create_prefect_app())


def _stop_without(parent: int) -> None:
    """Stop this server (as uvicorn stops on SIGTERM) once `parent` is no longer its parent.

    Uvicorn's graceful stop waits for open connections, and the job processes a dead web
    server left running keep theirs: after a grace period the server is killed, so that
    the next web server can start the API on the same port.
    """
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_STOP_GRACE_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)


class EmbeddedAPIServer(SubprocessASGIServer):
    """Prefect's `SubprocessASGIServer`, serving `create_app` with an API auth string."""

    auth_string: str = ""
    """The `PREFECT_SERVER_API_AUTH_STRING` the server requires."""

    def restart(self) -> None:
        """Start the server again after its process exited, on the same port if it is free.

        Raises:
            RuntimeError: If it did not start.
        """
        self.running = False
        self.start()
        _record(self)

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        return subprocess.Popen(
            args=[
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                f"{__name__}:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                _PARENT_VARIABLE: str(os.getpid()),
                **get_current_settings().to_environment_variables(exclude_unset=True),
                "PREFECT_SERVER_API_AUTH_STRING": self.auth_string,
            },
        )


def start_embedded_api() -> EmbeddedAPIServer:
    """Start the embedded API at this `PREFECT_HOME`'s address, with its auth string.

    The port and auth string recorded under `PREFECT_HOME` are reused (the port once it
    is free: the API of a web server that just died may still be stopping); the first
    start picks a free port and a random auth string and records them.

    Returns:
        The running server.

    Raises:
        RuntimeError: If it did not start.
        OSError: If the record cannot be written.
    """
    recorded = _read_record(_record_path())
    port: int | None = None
    auth_string = secrets.token_urlsafe(32)
    if recorded is not None:
        auth_string = recorded["auth_string"]
        deadline = time.monotonic() + _PORT_WAIT_SECONDS
        while not _can_listen(recorded["port"]):
            if time.monotonic() > deadline:
                LOGGER.warning(
                    "Port %s of the embedded Prefect API is taken: job processes of an "
                    "earlier server cannot report to this one",
                    recorded["port"],
                )
                break
            time.sleep(0.1)
        else:
            port = recorded["port"]
    server = EmbeddedAPIServer(port)
    server.auth_string = server.auth_string or auth_string  # (kept from a failed start)
    try:
        server.start()
    except RuntimeError:
        server.stop()  # (a server that was too slow to start must not answer later)
        raise
    _record(server)
    return server


def _can_listen(port: int) -> bool:
    """Whether uvicorn could listen on `port` (bound as it binds, with SO_REUSEADDR).

    Connections of an earlier server that are still closing do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _record_path() -> Path:
    return Path(get_current_settings().home).expanduser() / _RECORD_NAME


def _read_record(path: Path) -> dict[str, Any] | None:
    """The recorded port and auth string, if the file is this user's alone and well formed."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        LOGGER.warning("Ignoring %s: %s", path, err)
        return None
    with os.fdopen(handle) as file:
        status = os.fstat(file.fileno())
        if status.st_uid != os.getuid() or status.st_mode & 0o077:
            LOGGER.warning("Ignoring %s: other users may read it", path)
            return None
        try:
            record = json.load(file)
        except ValueError:
            return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("port"), int)
        or not isinstance(record.get("auth_string"), str)
        or not record["auth_string"]
    ):
        return None
    return record


def _record(server: EmbeddedAPIServer) -> None:
    """Record the server's port and auth string (a new file of mode 0600, then renamed)."""
    path = _record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{_RECORD_NAME}.")
    with os.fdopen(handle, "w") as file:
        json.dump({"port": server.port, "auth_string": server.auth_string}, file)
    os.replace(temporary, path)
