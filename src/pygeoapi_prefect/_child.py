"""What a job's process runs: Prefect's flow engine on the job's flow run.

The launcher imports this module and calls `prepare` before it forks, so every job
process starts with Prefect, pygeoapi and the flow engine in memory and Prefect's
settings already pointing at the right API.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager
from typing import Any

import prefect.flow_engine
import pydantic.v1  # noqa: F401  (Prefect imports it lazily for every new flow)
from prefect.context import refresh_global_settings_context
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from pygeoapi.plugin import load_plugin
from pygeoapi.process.hello_world import HelloWorldProcessor

from pygeoapi_prefect.embedded import JobLaunch
from pygeoapi_prefect.flows import build_process_flow, job_flow
from pygeoapi_prefect.settings import ProcessSettings

__all__ = ["prepare", "run_job"]

LOGGER = logging.getLogger(__name__)

_settings_scope: AbstractContextManager[Any] | None = None


def prepare(api_url: str) -> None:
    """Point Prefect at the API and warm the lazily loaded parts, once, before forking.

    Args:
        api_url: The Prefect API every job of this launcher reports to.
    """
    os.environ["PREFECT_API_URL"] = api_url
    if api_url.startswith("http://"):
        # No TLS to verify on a plain-HTTP API, and loading the CA bundle into every new
        # client (two per job) is a quarter of a job process's start-up time.
        os.environ["PREFECT_API_TLS_INSECURE_SKIP_VERIFY"] = "true"
    refresh_global_settings_context()
    # The runner watches each job process itself; heartbeats would only delay its exit.
    # Entered for good (and kept referenced): forked job processes inherit this context.
    global _settings_scope
    _settings_scope = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    _settings_scope.__enter__()
    # Building a flow once loads what Prefect imports on first use.
    warm: Any = HelloWorldProcessor({"name": "warm-up"})
    build_process_flow("warm-up", warm, ProcessSettings(), result_storage=None)


def run_job(launch: JobLaunch) -> None:
    """Run one job's flow run with Prefect's flow engine, in this (job) process.

    Args:
        launch: The job to run.
    """
    processor = load_plugin("process", launch.processor_def)
    flow = job_flow(launch.process_id, processor, launch.settings, launch.result_storage)
    state = prefect.flow_engine.run_flow_sync(
        flow,
        flow_run=launch.flow_run,
        parameters=launch.flow_run.parameters,
        return_type="state",
    )
    LOGGER.debug("Job %s ended %s", launch.flow_run.id, state)
