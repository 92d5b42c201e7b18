"""Jobs of plain pygeoapi processors, run without Prefect's flow engine.

Prefect's flow engine costs 150-300 ms of CPU a job, more than a typical pygeoapi process
does, and a stock processor with no retries, timeout or subscriber uses nothing it adds.
Such a job is run directly, and is still a flow run of the process's flow from start to end:
RUNNING, its output persisted as a Prefect result record (JSON) in the job's result storage, then
COMPLETED or FAILED. It is listed, read and removed like any other job.

- Synchronous: in the request's own thread, as pygeoapi runs synchronous jobs; the flow run
  is created RUNNING, labelled with this web server, so that a restarted server marks it
  crashed if the server dies under it. A dismissal cannot stop a thread, but the job ends
  CANCELLED, its output discarded: it never succeeds after being dismissed.
- Asynchronous: in the job's own process (`runner`), like any job, so that a dismissal
  stops it, and a crash ends it CRASHED.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.actions import LogCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.filesystems import WritableFileSystem
from prefect.states import Cancelled, Completed, Failed, Running
from pygeoapi.process.base import BaseProcessor

from pygeoapi_prefect.flows import execute_processor
from pygeoapi_prefect.jobs import LABEL_MIMETYPE
from pygeoapi_prefect.progress import progress_of
from pygeoapi_prefect.results import JobOutput, persist_output

__all__ = ["DirectOutcome", "run_direct", "start_direct"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectOutcome:
    """How a direct job ended: its output when it succeeded, else its final state's message."""

    output: JobOutput | None
    message: str | None


def run_direct(
    client: SyncPrefectClient,
    flow_run: FlowRun,
    processor: BaseProcessor,
    parameters: dict[str, Any],
    result_storage: WritableFileSystem,
) -> DirectOutcome:
    """Run a job's processor here and record the outcome on its RUNNING flow run.

    Args:
        client: The Prefect client of the manager.
        flow_run: The job's flow run, created RUNNING.
        processor: The job's processor.
        parameters: The job's flow-run parameters (`inputs`, `outputs`, `response`).
        result_storage: The saved storage block the output is persisted to.

    Returns:
        The job's output, or why it has none.
    """
    run_id = flow_run.id
    log = _JobLog(run_id)
    log.add(logging.INFO, f"Running {flow_run.name} without Prefect's flow engine")
    root = logging.getLogger()
    root.addHandler(log)
    try:
        with progress_of(client, run_id):
            output = execute_processor(
                processor,
                str(run_id),
                parameters["inputs"],
                parameters.get("outputs"),
                str(parameters.get("response", "raw")),
            )
    except Exception as err:
        message = f"Flow run encountered an exception: {type(err).__name__}: {err}"
        if not _dismissed(client, run_id):
            client.set_flow_run_state(run_id, Failed(message=message), force=True)
        log.add(logging.ERROR, f"Job failed: {message}")
        return DirectOutcome(None, message)
    finally:
        root.removeHandler(log)
        log.ship(client)
    if _dismissed(client, run_id):
        return DirectOutcome(None, "Job dismissed")
    record = persist_output(result_storage, output)
    if output["mimetype"] != "application/json":
        client.update_flow_run_labels(run_id, {LABEL_MIMETYPE: output["mimetype"]})
    client.set_flow_run_state(run_id, Completed(data=record), force=True)
    return DirectOutcome(output, None)


class _JobLog(logging.Handler):
    """The log lines of a direct job, sent to its flow run's logs in one request.

    It takes the records of the thread that runs the job (at the levels the loggers let
    through), at most `limit` of them.
    """

    def __init__(self, flow_run_id: uuid.UUID, limit: int = 1000) -> None:
        super().__init__(logging.NOTSET)
        self._flow_run_id = flow_run_id
        self._thread = threading.get_ident()
        self._limit = limit
        self._entries: list[LogCreate] = []

    def add(self, level: int, message: str, name: str = "pygeoapi_prefect.runtime.direct") -> None:
        """Add a line of the job's own."""
        self._entries.append(
            LogCreate(
                name=name,
                level=level,
                message=message,
                timestamp=datetime.now(UTC),
                flow_run_id=self._flow_run_id,
            )
        )

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread or len(self._entries) >= self._limit:
            return
        self._entries.append(
            LogCreate(
                name=record.name,
                level=record.levelno,
                message=record.getMessage(),
                timestamp=datetime.fromtimestamp(record.created, UTC),
                flow_run_id=self._flow_run_id,
            )
        )

    def ship(self, client: SyncPrefectClient) -> None:
        """Send the lines to the Prefect API (a job does not fail for its logs)."""
        try:
            client.create_logs(self._entries)
        except Exception:
            LOGGER.warning("Could not send the logs of job %s", self._flow_run_id, exc_info=True)


def start_direct(client: SyncPrefectClient, flow_run: FlowRun) -> bool:
    """Move a job process's flow run to RUNNING, unless it may not run (dismissed).

    Args:
        client: A Prefect client.
        flow_run: The job's flow run.

    Returns:
        Whether the job may run.
    """
    result: OrchestrationResult[Any] = client.set_flow_run_state(flow_run.id, Running())
    return result.status == SetStateStatus.ACCEPT


def _dismissed(client: SyncPrefectClient, run_id: uuid.UUID) -> bool:
    """End a job dismissed while it ran CANCELLED; say whether it was."""
    if client.read_flow_run(run_id).state_type not in {StateType.CANCELLING, StateType.CANCELLED}:
        return False
    client.set_flow_run_state(run_id, Cancelled(message="Job dismissed"), force=True)
    return True
