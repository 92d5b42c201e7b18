"""Every private API of Prefect, pygeoapi, Flask and CPython this package uses, in one place.

Each entry says why no public API serves, and was checked against:

- Prefect 3.8.0, 3.8.8 (the lock) and 3.9.0 (`make versions`);
- pygeoapi 0.24.0, Flask 3.1;
- CPython 3.12 and 3.13.

`ResultRecord` and `ResultRecordMetadata`, the record of a persisted result and the
metadata a COMPLETED state carries, are imported by `prefect.results` from its private
`prefect._result_records` without exporting them.

Prefect's `SubprocessASGIServer` (the server of Prefect's ephemeral mode) is subclassed
by `runtime.embedded_api.EmbeddedAPIServer`, which overrides its private `_run_uvicorn_command` to
serve its own app factory, and reads its `port`, `running` and `server_process`; Prefect's
server app factories `create_app` and `create_ui_app` are its server's internals.

`tests/test_compat.py` checks each entry against the installed releases and fails with a
message naming the entry when one has changed, so that an upgrade cannot break a job
path quietly. Everything else in the package uses public APIs only.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prefect.flow_engine
import prefect.server.database
from prefect.results import ResultRecord, ResultRecordMetadata  # type: ignore[attr-defined]
from prefect.server.api.server import SubprocessASGIServer, create_ui_app
from prefect.server.api.server import create_app as create_api_app

__all__ = [
    "ResultRecord",
    "ResultRecordMetadata",
    "SubprocessASGIServer",
    "call_sync",
    "create_api_app",
    "create_ui_app",
    "flask_app_and_api",
    "join_threads_and_run_exit_hooks",
    "prefect_migrations",
    "replace_request_body",
    "run_flow_run",
]


def call_sync(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call one of Prefect's sync-or-async functions, forcing its synchronous form.

    Prefect's `sync_compatible` and `async_dispatch` functions (`Block.load`, `.save`,
    `.read_path`, `create_progress_artifact`, ...) pick their form from the calling
    context, and answer with a coroutine where an event loop runs in the thread (a flow's
    hooks, the test harness). Their `_sync=True` keyword, private, forces the blocking
    form; Prefect's public `a...` twins are async only.

    Args:
        function: The Prefect function or bound method.
        *args: Its positional arguments.
        **kwargs: Its keyword arguments.

    Returns:
        What the function returns, never a coroutine.
    """
    return function(*args, _sync=True, **kwargs)


def run_flow_run(flow: Any, flow_run: Any, parameters: dict[str, Any]) -> Any:
    """Run a flow run that already exists (the job's) in this process, with Prefect's engine.

    Calling a flow creates a new flow run; Prefect's `Runner` and workers run an existing
    one in a new interpreter, which costs a job about a second (the forked job processes
    start in milliseconds). `prefect.flow_engine.run_flow_sync` is the engine entry point
    those use inside that interpreter; it is not documented as public.

    Args:
        flow: The flow.
        flow_run: The job's flow run.
        parameters: Its parameters.

    Returns:
        The final state.
    """
    return prefect.flow_engine.run_flow_sync(
        flow, flow_run=flow_run, parameters=parameters, return_type="state"
    )


def prefect_migrations() -> Path:
    """The directory of Prefect's database migration scripts (Alembic), inside its package.

    Prefect's API tells no client whether its database is migrated; the embedded default
    compares the database's `alembic_version` with these scripts' heads.

    Returns:
        The `_migrations` directory.
    """
    return Path(prefect.server.database.__file__).parent / "_migrations"


def join_threads_and_run_exit_hooks() -> None:
    """Join the threads and run the exit hooks, as Python's own shutdown starts.

    A forked job process ends with `os._exit` (its interpreter teardown would copy the
    launcher's memory), after this: `threading._shutdown` joins non-daemon threads and
    runs `threading._register_atexit` hooks (concurrent.futures), and
    `atexit._run_exitfuncs` the `atexit` hooks, where Prefect drains its log and event
    workers. Neither has a public form.
    """
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()


def flask_app_and_api() -> tuple[Any, Any]:
    """Pygeoapi's Flask app and its `API` object, made when `pygeoapi.flask_app` is imported.

    pygeoapi 0.24 has no app factory: its app and API are module globals of
    `pygeoapi.flask_app`, which full conformance mode serves in front of.

    Returns:
        (the Flask app, pygeoapi's `API`).
    """
    from pygeoapi import flask_app

    return flask_app.APP, flask_app.api_


def replace_request_body(request: Any, body: bytes) -> None:
    """Make the rest of a request's handling read `body` as the request's body.

    Full conformance mode hands an execute request on to pygeoapi's own view with a
    changed document; Flask caches a request's body in `_cached_data`, which its
    `get_data()` and `get_json()` read, and has no public way to replace it.

    Args:
        request: The Flask request.
        body: The new body.
    """
    request._cached_data = body
