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

Prefect's UI is served beside the API (at the server's root, the API under `/api`), on
loopback unless `PREFECT_SERVER_API_HOST` says otherwise, and off with
`PREFECT_UI_ENABLED=false`. The database is migrated at start only when it is not at
Prefect's newest migration already (a new database, or a Prefect upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import prefect
import prefect.server.database
from prefect.server.api.server import SubprocessASGIServer, create_ui_app
from prefect.server.api.server import create_app as create_prefect_app
from prefect.settings import get_current_settings
from sqlalchemy.engine import make_url

__all__ = ["EmbeddedAPIServer", "create_app"]

_READ_SUFFIXES = ("/filter", "/count", "/paginate", "/history")
_PARENT_VARIABLE = "PYGEOAPI_PREFECT_PARENT_PID"
_PARENT_POLL_SECONDS = 1.0
_UI_VARIABLE = "PYGEOAPI_PREFECT_UI"
_STARTUP_TIMEOUT_SECONDS = 180
"""How long a start may take at least: Prefect's 20 s default is too short for a start
that migrates a new database (about 100 migrations), or on a busy machine."""


class _OneWriterAtATime:
    """ASGI middleware: requests that may write go to the app one at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _writes(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        async with self._lock:
            await self.app(scope, receive, send)


def _writes(method: str, path: str) -> bool:
    if method in {"GET", "HEAD", "OPTIONS"}:
        return False
    return not (method == "POST" and path.rstrip("/").endswith(_READ_SUFFIXES))


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
    app: Any = create_prefect_app()
    if os.environ.get(_UI_VARIABLE) == "1":
        app = _WithUI(app, create_ui_app(ephemeral=False))
    return _OneWriterAtATime(app)


def database_is_current() -> bool:
    """Whether the embedded API's SQLite database is at Prefect's newest migration already.

    Read from the database's `alembic_version` table (Prefect's API has no route that
    tells it) and the heads of Prefect's own SQLite migration scripts.

    Returns:
        True when starting Prefect's API need not migrate the database.
    """
    secret = get_current_settings().server.database.connection_url
    if secret is None:
        return False
    url = make_url(secret.get_secret_value())
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    path = Path(url.database).expanduser()
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            versions = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:
        return False
    from alembic.script import ScriptDirectory

    migrations = Path(prefect.server.database.__file__).parent / "_migrations"
    scripts = ScriptDirectory(
        str(migrations), version_locations=[str(migrations / "versions" / "sqlite")]
    )
    return versions == set(scripts.get_heads())


def _stop_without(parent: int) -> None:
    """Stop this server (as uvicorn stops on SIGTERM) once `parent` is no longer its parent."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


class EmbeddedAPIServer(SubprocessASGIServer):
    """Prefect's `SubprocessASGIServer`, serving `create_app` instead of the bare app.

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
            self.migrates = not database_is_current()
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
