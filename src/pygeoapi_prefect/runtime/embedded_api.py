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

Prefect's UI is served beside the API (at the server's root, the API under `/api`), on
loopback unless `PREFECT_SERVER_API_HOST` says otherwise, and off with
`PREFECT_UI_ENABLED=false`. The database is migrated at start only when it is not at
Prefect's newest migration already (a new database, or a Prefect upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import prefect
from prefect.settings import get_current_settings
from sqlalchemy.engine import make_url

from pygeoapi_prefect._compat import (
    SubprocessASGIServer,
    create_api_app,
    create_ui_app,
    prefect_migrations,
)
from pygeoapi_prefect.connection import writes

__all__ = ["EmbeddedAPIServer", "create_app", "start_embedded_api"]

LOGGER = logging.getLogger(__name__)

_RECORD_NAME = "pygeoapi-embedded-api.json"
_PORT_WAIT_SECONDS = 15.0
_PARENT_VARIABLE = "PYGEOAPI_PREFECT_PARENT_PID"
_PARENT_POLL_SECONDS = 1.0
_UI_VARIABLE = "PYGEOAPI_PREFECT_UI"
_STARTUP_TIMEOUT_SECONDS = 180
"""How long a start may take at least: Prefect's 20 s default is too short for a start
that migrates a new database (about 100 migrations), or on a busy machine."""
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


class _WithUI:
    """ASGI app: the API (and the lifespan) to Prefect's app, every other path to its UI.

    Prefect's ephemeral app (the embedded API's: fewer background services) leaves the UI
    out; Prefect's own UI app serves it here instead.
    """

    def __init__(self, api: Any, ui: Any) -> None:
        self.api = api
        self.ui = ui

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        to_api = scope["type"] == "lifespan" or path == "/api" or path.startswith("/api/")
        await (self.api if to_api else self.ui)(scope, receive, send)


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
    app: Any = create_api_app()
    if os.environ.get(_UI_VARIABLE) == "1":
        app = _WithUI(app, create_ui_app(ephemeral=False))
    return _OneWriterAtATime(app)


def database_is_current(database: Path | None = None) -> bool:
    """Whether the embedded API's SQLite database is at Prefect's newest migration already.

    Read from the database's `alembic_version` table (Prefect's API has no route that
    tells it) and the heads of Prefect's own SQLite migration scripts.

    Args:
        database: The SQLite file (`server.manager.connection` as a path); None: the one
            Prefect's database setting names.

    Returns:
        True when starting Prefect's API need not migrate the database.
    """
    if database is None:
        secret = get_current_settings().server.database.connection_url
        if secret is None:
            return False
        url = make_url(secret.get_secret_value())
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return False
        database = Path(url.database)
    path = database.expanduser()
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            versions = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:
        return False
    from alembic.script import ScriptDirectory

    migrations = prefect_migrations()
    scripts = ScriptDirectory(
        str(migrations), version_locations=[str(migrations / "versions" / "sqlite")]
    )
    return versions == set(scripts.get_heads())


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
    """Prefect's `SubprocessASGIServer`, serving `create_app` with an API auth string.

    Attributes:
        database: The SQLite file of its Prefect database (`server.manager.connection`
            as a path); None: Prefect's own database setting.
    """

    database: Path | None = None

    migrates: bool = True
    """Whether this start migrates the database (see `database_is_current`)."""

    @property
    def address(self) -> str:
        """The server's root URL (its UI; the API is under `/api`)."""
        host = _host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}"

    @property
    def ui_enabled(self) -> bool:
        """Whether the server serves Prefect's UI (`PREFECT_UI_ENABLED`, on by default)."""
        return bool(get_current_settings().server.ui.enabled)

    def start(self, timeout: int | None = None) -> None:
        """Start the server, migrating its database only if that needs it.

        A server that does not answer in time is stopped again (Prefect's own start
        leaves it running), so that a later attempt does not add a second one.

        Args:
            timeout: Seconds to wait for it; by default Prefect's startup timeout
                (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`), at least 180.
        """
        try:
            self.migrates = not database_is_current(self.database)
        except Exception:  # (an unreadable version: let Prefect migrate, as it always does)
            self.migrates = True
        if timeout is None:
            timeout = max(
                _STARTUP_TIMEOUT_SECONDS,
                int(get_current_settings().server.ephemeral.startup_timeout_seconds),
            )
        try:
            super().start(timeout)
        except BaseException:
            self.stop()
            raise

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
        migrate: dict[str, str] = {}
        if not self.migrates:
            migrate["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
        # (an explicit PREFECT_UI_API_URL, among the settings below, wins)
        ui_api = {"PREFECT_UI_API_URL": self.api_url} if self.ui_enabled else {}
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
                _host(),
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                # No telemetry: its service writes at start, racing the first jobs for SQLite.
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                **ui_api,
                _UI_VARIABLE: "1" if self.ui_enabled else "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                _PARENT_VARIABLE: str(os.getpid()),
                **get_current_settings().to_environment_variables(exclude_unset=True),
                **_database_environment(self.database),
                **migrate,
                "PREFECT_SERVER_API_AUTH_STRING": self.auth_string,
            },
        )


def _database_environment(database: Path | None) -> dict[str, str]:
    """Prefect's database setting for a SQLite file (none: Prefect's own setting)."""
    if database is None:
        return {}
    return {"PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database.resolve()}"}


def _host() -> str:
    """The host the embedded API binds: `PREFECT_SERVER_API_HOST`, loopback by default."""
    return str(get_current_settings().server.api.host or "127.0.0.1")


def start_embedded_api(database: Path | None = None) -> EmbeddedAPIServer:
    """Start the embedded API at this `PREFECT_HOME`'s address, with its auth string.

    The port and auth string recorded under `PREFECT_HOME` are reused (the port once it
    is free: the API of a web server that just died may still be stopping); the first
    start picks a free port and a random auth string and records them.

    Args:
        database: The SQLite file of its Prefect database (`server.manager.connection`
            as a path); None: Prefect's own database setting.

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
    if server.running:
        return server
    server.database = database
    server.auth_string = server.auth_string or auth_string  # (kept from a failed start)
    server.start()  # (one that was too slow to start is stopped: it must not answer later)
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
