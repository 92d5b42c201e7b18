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
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.server.api.server import create_app as create_prefect_app
from prefect.settings import get_current_settings

__all__ = ["EmbeddedAPIServer", "create_app"]

_READ_SUFFIXES = ("/filter", "/count", "/paginate", "/history")
_PARENT_VARIABLE = "PYGEOAPI_PREFECT_PARENT_PID"
_PARENT_POLL_SECONDS = 1.0


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
                # No telemetry: its service writes at start, racing the first jobs for SQLite.
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                _PARENT_VARIABLE: str(os.getpid()),
                **get_current_settings().to_environment_variables(exclude_unset=True),
                **_database_environment(self.database),
            },
        )


def _database_environment(database: Path | None) -> dict[str, str]:
    """Prefect's database setting for a SQLite file (none: Prefect's own setting)."""
    if database is None:
        return {}
    return {"PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database.resolve()}"}
