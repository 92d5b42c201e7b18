"""Each private API of `_compat` is still there, as it was in the releases it was checked with.

A failure names the entry and what changed: an upgrade of Prefect, pygeoapi, Flask or
CPython that breaks one fails here first, with a message, instead of in a job.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import threading
from pathlib import Path
from typing import Any

import prefect
import pygeoapi
from prefect.filesystems import LocalFileSystem

from pygeoapi_prefect import _compat

VERSIONS = f"(installed: prefect {prefect.__version__}, pygeoapi {pygeoapi.__version__})"


def _changed(entry: str, what: str) -> str:
    return f"_compat.{entry}: {what} {VERSIONS}; see its docstring for what relies on it"


def test_call_sync_forces_the_blocking_form_inside_an_event_loop(tmp_path: Path) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))
    _compat.call_sync(storage.write_path, "probe", b"content")

    async def read_inside_a_loop() -> Any:
        return _compat.call_sync(storage.read_path, "probe")

    content = asyncio.run(read_inside_a_loop())
    assert content == b"content", _changed(
        "call_sync", f"Prefect's `_sync=True` no longer forces the blocking form: got {content!r}"
    )


def test_run_flow_run_matches_the_engine_entry_point() -> None:
    parameters = inspect.signature(prefect.flow_engine.run_flow_sync).parameters
    missing = {"flow", "flow_run", "parameters", "return_type"} - set(parameters)
    assert not missing, _changed("run_flow_run", f"run_flow_sync lost {sorted(missing)}")


def test_prefect_migrations_hold_the_sqlite_scripts() -> None:
    versions = _compat.prefect_migrations() / "versions" / "sqlite"
    assert versions.is_dir() and any(versions.glob("*.py")), _changed(
        "prefect_migrations", f"no migration scripts in {versions}"
    )


def test_interpreter_shutdown_steps_exist() -> None:
    for module, name in ((threading, "_shutdown"), (atexit, "_run_exitfuncs")):
        assert callable(getattr(module, name, None)), _changed(
            "join_threads_and_run_exit_hooks", f"{module.__name__}.{name} is gone"
        )


def test_subprocess_server_keeps_what_the_embedded_api_overrides_and_reads() -> None:
    server = _compat.SubprocessASGIServer
    for name in ("_run_uvicorn_command", "start", "stop"):
        assert callable(getattr(server, name, None)), _changed(
            "SubprocessASGIServer", f"its {name}() is gone"
        )
    for name in ("port", "running", "server_process", "api_url"):
        assert name in inspect.getsource(server), _changed(
            "SubprocessASGIServer", f"it no longer has {name}"
        )
    assert "ephemeral" in inspect.signature(_compat.create_ui_app).parameters, _changed(
        "create_ui_app", "it no longer takes `ephemeral`"
    )
    assert callable(_compat.create_api_app), _changed("create_api_app", "it is gone")


def test_result_records_keep_the_fields_results_read() -> None:
    record_fields = set(_compat.ResultRecord.model_fields)
    metadata_fields = set(_compat.ResultRecordMetadata.model_fields)
    assert {"metadata", "result"} <= record_fields, _changed(
        "ResultRecord", f"fields are now {sorted(record_fields)}"
    )
    assert {"serializer", "storage_block_id", "storage_key"} <= metadata_fields, _changed(
        "ResultRecordMetadata", f"fields are now {sorted(metadata_fields)}"
    )


def test_flask_app_and_api_are_pygeoapi_s_globals(app: Any) -> None:
    flask_app, api = _compat.flask_app_and_api()
    assert flask_app is app, _changed("flask_app_and_api", "pygeoapi.flask_app.APP changed")
    assert hasattr(api, "manager"), _changed("flask_app_and_api", "api_ has no manager")


def test_replace_request_body_is_what_the_view_reads(app: Any) -> None:
    with app.test_request_context("/", method="POST", json={"old": 1}):
        from flask import request

        assert json.loads(request.get_data(cache=True)) == {"old": 1}  # as app.py reads it
        _compat.replace_request_body(request, json.dumps({"new": 2}).encode())
        assert request.get_json() == {"new": 2}, _changed(
            "replace_request_body", "Flask no longer reads a request's body from _cached_data"
        )
