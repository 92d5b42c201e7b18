"""What a job's process runs: Prefect's flow engine on the job's flow run, or `direct`.

The launcher imports this module and calls `prepare` before it forks, so every job
process starts with Prefect, pygeoapi and the flow engine in memory and Prefect's
settings already pointing at the right API.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import certifi
import pydantic.v1  # noqa: F401  (Prefect imports it lazily for every new flow)
from prefect.client.orchestration import get_client
from prefect.context import refresh_global_settings_context
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from pygeoapi.plugin import load_plugin
from pygeoapi.process.hello_world import HelloWorldProcessor

from pygeoapi_prefect._compat import run_flow_run
from pygeoapi_prefect.flows import build_process_flow, job_flow
from pygeoapi_prefect.runtime.direct import run_direct, start_direct
from pygeoapi_prefect.runtime.runner import JobLaunch
from pygeoapi_prefect.settings import ProcessSettings

__all__ = ["prepare", "run_job"]

LOGGER = logging.getLogger(__name__)

_settings_scope: AbstractContextManager[Any] | None = None


def prepare(api_url: str, auth_string: str | None = None) -> None:
    """Point Prefect at the API and warm the lazily loaded parts, once, before forking.

    Args:
        api_url: The Prefect API every job of this launcher reports to.
        auth_string: The embedded API's auth string (None: Prefect's own settings apply).
    """
    os.environ["PREFECT_API_URL"] = api_url
    if auth_string is not None:
        os.environ["PREFECT_API_AUTH_STRING"] = auth_string
    if api_url.startswith("http://"):
        # Every Prefect client a job process opens (three or four per job) builds a TLS
        # context from a CA bundle: a third of the process's CPU time. A plain-HTTP API
        # needs none, so Prefect's clients get a one-certificate bundle to parse. (Only
        # Prefect's API clients read this setting; a process's own HTTPS calls do not.)
        os.environ["PREFECT_API_SSL_CERT_FILE"] = _one_certificate_bundle()
    refresh_global_settings_context()
    # Job logs go to the Prefect API; the server's console shows their warnings only.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.WARNING)
    # The runner watches each job process itself; heartbeats would only delay its exit.
    # Entered for good (and kept referenced): forked job processes inherit this context.
    global _settings_scope
    _settings_scope = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    _settings_scope.__enter__()
    # Building a flow once loads what Prefect imports on first use.
    warm: Any = HelloWorldProcessor({"name": "warm-up"})
    build_process_flow("warm-up", warm, ProcessSettings(), result_storage=None)


def _one_certificate_bundle() -> str:
    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    first = bundle[bundle.index("-----BEGIN CERTIFICATE-----") : bundle.index(end) + len(end)]
    handle, path = tempfile.mkstemp(prefix="pygeoapi-prefect-", suffix=".pem")
    with os.fdopen(handle, "w") as file:
        file.write(first + "\n")
    atexit.register(_remove_in, os.getpid(), path)  # (job processes inherit atexit)
    return path


def _remove_in(owner: int, path: str) -> None:
    if os.getpid() == owner:
        os.unlink(path)


def run_job(launch: JobLaunch) -> None:
    """Run one job's flow run, in this (job) process.

    With Prefect's flow engine, or directly (see `direct`) when the launch says so.

    Args:
        launch: The job to run.
    """
    processor = load_plugin("process", launch.processor_def)
    if launch.direct:
        with get_client(sync_client=True) as client:
            if start_direct(client, launch.flow_run):
                outcome = run_direct(
                    client,
                    launch.flow_run,
                    processor,
                    launch.flow_run.parameters,
                    launch.result_storage,
                )
                LOGGER.debug("Job %s ended: %s", launch.flow_run.id, outcome.message or "success")
        return
    flow = job_flow(launch.process_id, processor, launch.settings, launch.result_storage)
    state = run_flow_run(flow, launch.flow_run, launch.flow_run.parameters)
    LOGGER.debug("Job %s ended %s", launch.flow_run.id, state)
