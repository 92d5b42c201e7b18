"""How a Prefect flow run reads as an OGC job.

A job *is* a flow run: the job id is the flow run's UUID, the process id travels as a tag,
and everything pygeoapi shows about a job (status, message, progress, timestamps) is read
from the flow run and its state. Nothing about a job is kept outside Prefect.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import LogSort
from pygeoapi.util import DATETIME_FORMAT, JobStatus

from pygeoapi_prefect.status import job_status

__all__ = [
    "ADDED_JOB_KEY",
    "ADDED_JOB_TAG",
    "JOB_TAG",
    "LABEL_MIMETYPE",
    "MAX_DURATION",
    "MAX_OFFSET",
    "MAX_PROCESS_IDS",
    "PROCESS_TAG_PREFIX",
    "SERVER_TAG_PREFIX",
    "JobQuery",
    "JobQueryError",
    "created_of",
    "duration_of",
    "flow_run_link",
    "job_record",
    "last_errors",
    "parse_job_id",
    "process_id_of",
    "process_tag",
    "server_tag",
]

JOB_TAG = "pygeoapi"
"""Tag on every flow run that is an OGC job."""

ADDED_JOB_TAG = "pygeoapi-added-job"
"""Tag of a job that `add_job` recorded: this server's job even when its process is not
configured (pygeoapi's own callers record jobs of any process id)."""

ADDED_JOB_KEY = "pygeoapi-job:"
"""Prefix of the idempotency key of a job `add_job` recorded under a caller's identifier.

Prefect chooses flow run ids: such a job's flow run keeps its own id, and answers to the
caller's identifier too (its idempotency key is this prefix and the identifier)."""

PROCESS_TAG_PREFIX = "pygeoapi-process:"
"""Prefix of the tag that names a job's process, e.g. `pygeoapi-process:hello-world`."""

SERVER_TAG_PREFIX = "pygeoapi-server:"
"""Prefix of the tag that names the server a job belongs to (`ManagerSettings.server_id`)."""

LABEL_MIMETYPE = "pygeoapi.mimetype"
"""Flow-run label holding the media type of a finished job's result."""

_ERROR_LOG_LIMIT = 200
"""The most ERROR-level log lines read for a page of crashed jobs (one Prefect page)."""


MAX_PROCESS_IDS = 100
"""The most `processID` values one job list may filter by (one Prefect tag filter each)."""

MAX_DURATION = 100 * 366 * 24 * 3600
"""The longest `minDuration` or `maxDuration`, in seconds (a century)."""

MAX_OFFSET = 1_000_000_000
"""The largest `offset` of a job list (far more jobs than a Prefect database holds)."""


class JobQueryError(ValueError):
    """A job-list filter or page out of range.

    Attributes:
        parameter: The query parameter at fault (`processID`, `datetime`, `minDuration`,
            `maxDuration` or `offset`).
    """

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class JobQuery:
    """Which jobs a job list asks for (the OGC job-list filters), and which page.

    Values that no Prefect query can hold are refused when the query is made, so that a
    job list never fails on them in the Prefect API.

    Raises:
        JobQueryError: When a value is out of range: more than `MAX_PROCESS_IDS` process
            ids, a time that is not a valid UTC time, a duration beyond `MAX_DURATION`
            or negative, a negative offset or one beyond `MAX_OFFSET`.
    """

    process_ids: tuple[str, ...] = ()
    statuses: tuple[JobStatus, ...] = ()
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if len(set(self.process_ids)) > MAX_PROCESS_IDS:
            raise JobQueryError("processID", f"at most {MAX_PROCESS_IDS} process ids")
        for instant in (self.created_after, self.created_before):
            if instant is not None:
                _check_instant(instant)
        for name, duration in (
            ("minDuration", self.min_duration),
            ("maxDuration", self.max_duration),
        ):
            if duration is not None and not 0 <= duration <= MAX_DURATION:
                raise JobQueryError(name, f"a number of seconds from 0 to {MAX_DURATION}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise JobQueryError("offset", f"an integer from 0 to {MAX_OFFSET}")


def _check_instant(instant: dt.datetime) -> None:
    """Refuse a time with no UTC equivalent (e.g. 9999-12-31T23:59:59-23:59)."""
    try:
        instant.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise JobQueryError("datetime", f"{instant.isoformat()} is out of range") from None


def process_tag(process_id: str) -> str:
    """Return the tag that marks a flow run as a job of `process_id`."""
    return f"{PROCESS_TAG_PREFIX}{process_id}"


def server_tag(server_id: str) -> str:
    """Return the tag that marks a flow run as a job of the server `server_id`."""
    return f"{SERVER_TAG_PREFIX}{server_id}"


def process_id_of(flow_run: FlowRun) -> str | None:
    """Return the process id recorded on a flow run, or None if it is not a job."""
    for tag in flow_run.tags:
        if tag.startswith(PROCESS_TAG_PREFIX):
            return tag[len(PROCESS_TAG_PREFIX) :]
    return None


def parse_job_id(job_id: Any) -> uuid.UUID | None:
    """Validate a job id from a request.

    Only the canonical textual form of a UUID is accepted, so that nothing else a client
    sends (paths, filters, huge strings) ever reaches Prefect or the filesystem.

    Args:
        job_id: The job id as received.

    Returns:
        The UUID, or None when `job_id` is not a job id.
    """
    if not isinstance(job_id, str) or len(job_id) != 36:
        return None
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        return None
    return parsed if str(parsed) == job_id.lower() else None


def created_of(flow_run: FlowRun) -> dt.datetime | None:
    """When a job was created: the time its flow run was scheduled for.

    Job lists sort and filter by this time in Prefect's queries (`expected_start_time`),
    so it is also the `created` a job shows.
    """
    return flow_run.expected_start_time or flow_run.created


def duration_of(flow_run: FlowRun, now: dt.datetime) -> float | None:
    """Seconds a job has run (until now while running), or None if it has not started."""
    if flow_run.start_time is None:
        return None
    state = flow_run.state
    end = flow_run.end_time if state is not None and state.is_final() else None
    return ((end or now) - flow_run.start_time).total_seconds()


def _timestamp(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime(DATETIME_FORMAT)


def last_errors(client: SyncPrefectClient, flow_runs: list[FlowRun]) -> dict[uuid.UUID, str]:
    """Read the last error each crashed job logged, in one query.

    A crashed flow run's state says only that its process ended (say, `Process exited
    with status code: 1`); the cause, such as a module its worker cannot import, is in
    the run's log.

    Args:
        client: A Prefect client.
        flow_runs: Jobs' flow runs; only the CRASHED ones are looked at.

    Returns:
        For each crashed flow run that logged an error: the last line of its last one.
    """
    crashed = [run.id for run in flow_runs if run.state_type == StateType.CRASHED]
    if not crashed:
        return {}
    logs = client.read_logs(
        log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=crashed),
            level=LogFilterLevel(ge_=logging.ERROR),
        ),
        sort=LogSort.TIMESTAMP_DESC,
        limit=_ERROR_LOG_LIMIT,
    )
    found: dict[uuid.UUID, str] = {}
    for log in logs:
        lines = [line.strip() for line in log.message.splitlines() if line.strip()]
        if log.flow_run_id is not None and log.flow_run_id not in found and lines:
            found[log.flow_run_id] = lines[-1]
    return found


def _message(
    flow_run: FlowRun, status: JobStatus, progress_message: str | None, last_error: str | None
) -> str:
    state = flow_run.state
    state_message = state.message if state is not None else None
    if state is not None and state.type == StateType.CANCELLING:
        return state_message or "Job is being dismissed"
    if status == JobStatus.failed:
        name = (state.name if state is not None else None) or "Failed"
        message = f"{name}: {state_message}" if state_message else f"Job {name.lower()}"
        return f"{message} (last error logged: {last_error})" if last_error else message
    if status == JobStatus.running and progress_message:
        return progress_message
    if state_message:
        return state_message
    return {
        JobStatus.accepted: "Job accepted and ready for execution",
        JobStatus.running: "Job running",
        JobStatus.successful: "Job complete",
        JobStatus.dismissed: "Job dismissed",
    }.get(status, "")


def flow_run_link(ui_url: str, flow_run_id: uuid.UUID | str) -> dict[str, str]:
    """The link from a job to its flow-run page in the Prefect UI at `ui_url`."""
    return {
        "href": f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}",
        "rel": "related",
        "type": "text/html",
        "title": "the job's flow run in the Prefect UI",
    }


def job_record(
    flow_run: FlowRun,
    progress: tuple[int, str | None] | None = None,
    last_error: str | None = None,
    ui_url: str | None = None,
) -> dict[str, Any]:
    """Build the job mapping pygeoapi expects from a flow run.

    Args:
        flow_run: The flow run of the job.
        progress: The last progress the job reported (percent, message), if any.
        last_error: For a crashed job, the last error it logged (see `last_errors`).
        ui_url: The Prefect UI, if any: the record then links to the flow run's page.

    Returns:
        The job as pygeoapi's API layer reads it (keys of `BaseManager.get_job`, and
        `links`).
    """
    state = flow_run.state
    status = job_status(
        state.type if state else flow_run.state_type,
        state.name if state else flow_run.state_name,
    )
    percent, progress_message = progress if progress is not None else (None, None)
    if status == JobStatus.successful:
        percent = 100
    elif percent is None:
        percent = 0
    updated = max(
        (t for t in (flow_run.updated, state.timestamp if state else None) if t is not None),
        default=created_of(flow_run),
    )
    request = _execute_request(flow_run.parameters)
    return {
        "type": "process",
        "identifier": str(flow_run.id),
        "process_id": process_id_of(flow_run),
        "status": status.value,
        "message": _message(flow_run, status, progress_message, last_error),
        "progress": percent,
        "created": _timestamp(created_of(flow_run)),
        "started": _timestamp(flow_run.start_time),
        "finished": _timestamp(flow_run.end_time) if state and state.is_final() else None,
        "updated": _timestamp(updated),
        "mimetype": flow_run.labels.get(LABEL_MIMETYPE, "application/json")
        if flow_run.labels
        else "application/json",
        "location": None,
        "parameters": request.get("inputs"),
        "response": str(request.get("response") or "raw"),
        "requested_outputs": request.get("outputs"),
        "links": [flow_run_link(ui_url, flow_run.id)] if ui_url else [],
    }


def _execute_request(parameters: dict[str, Any]) -> dict[str, Any]:
    """The execute request a job's flow-run parameters hold (two layouts, see `flows`)."""
    request = parameters.get("execute_request")
    return request if isinstance(request, dict) else parameters
