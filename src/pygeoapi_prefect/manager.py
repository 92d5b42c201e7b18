"""The pygeoapi process manager whose jobs are Prefect flow runs.

A job's life, by module:

1. `manager.PrefectManager.execute_process` validates the request and creates the job's
   flow run (`SCHEDULED`, tagged with the server and process ids): the job id is the
   flow run id;
2. `runtime.runner.EmbeddedRunner` runs it in a child process with Prefect's flow engine
   (`flows.build_process_flow` wraps the processor), or a Prefect worker runs it when the
   process has a deployment;
3. `progress.report_progress` and the flow run's states tell how it goes, read back by
   `jobs.job_record`;
4. `results.ResultStorage` keeps its output in Prefect result storage;
5. `PrefectManager.delete_job` dismisses it (CANCELLED) or removes it with its results.

A job's flow run carries the tags `pygeoapi`, `pygeoapi-server:<server_id>` and
`pygeoapi-process:<id>`: the manager reads, lists and deletes only flow runs with all
three (of a configured process). Built by a process that serves pygeoapi's Flask app,
the manager gets its Prefect side ready (`PrefectManager.start`) before the app serves.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.actions import DeploymentFlowRunCreate, FlowRunCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterStartTime,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, FlowRunPolicy, State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.filesystems import WritableFileSystem
from prefect.settings import get_current_settings
from prefect.states import (
    Cancelled,
    Cancelling,
    Pending,
    Running,
    Scheduled,
    to_state_create,
)
from prefect.utilities.names import generate_slug
from pygeoapi.plugin import PLUGINS
from pygeoapi.process.base import (
    BaseProcessor,
    JobNotFoundError,
    ProcessorExecuteError,
)
from pygeoapi.process.manager.base import BaseManager
from pygeoapi.util import (
    JobStatus,
    ProcessExecutionMode,
    RequestedProcessExecutionMode,
    RequestedResponse,
    Subscriber,
)
from werkzeug.serving import is_running_from_reloader

from pygeoapi_prefect.callbacks import CallbackURLError
from pygeoapi_prefect.coalesce import CoalescingReader
from pygeoapi_prefect.connection import PrefectConnection
from pygeoapi_prefect.dedup import (
    DEDUP_HEADER,
    counts,
    created_here,
    creation_context,
    dedup_key,
    next_key,
)
from pygeoapi_prefect.errors import (
    DeploymentNotFoundError,
    InvalidInputError,
    InvalidQueryError,
    JobStillRunningError,
    PayloadTooLargeError,
    PrefectUnavailableError,
    ProcessorImportError,
    ResultNotAvailableError,
    prefect_api_errors,
)
from pygeoapi_prefect.flows import job_flow_name, job_parameters
from pygeoapi_prefect.jobs import (
    JOB_TAG,
    LABEL_MIMETYPE,
    JobQuery,
    JobQueryError,
    duration_of,
    job_record,
    last_errors,
    parse_job_id,
    process_id_of,
    process_tag,
    server_tag,
)
from pygeoapi_prefect.process.base import BasePrefectProcessor, flow_parameters
from pygeoapi_prefect.progress import read_progress
from pygeoapi_prefect.results import (
    JobOutput,
    ResultStorage,
    ResultUnavailableError,
    persist_output,
)
from pygeoapi_prefect.runtime.direct import run_direct
from pygeoapi_prefect.runtime.runner import LABEL_RUNNER, EmbeddedRunner, JobLaunch, runner_id
from pygeoapi_prefect.schemas import ExceptionDocument, ExecuteRequest
from pygeoapi_prefect.settings import ManagerSettings, ProcessSettings, process_settings_of
from pygeoapi_prefect.status import job_status, new_state, state_filter
from pygeoapi_prefect.subscriber import LABEL_SUBSCRIBER, subscriber_document, subscriber_labels
from pygeoapi_prefect.validation import (
    MAX_DEPTH,
    InputValidationError,
    RequestTooLargeError,
    validate_bounds,
    validate_inputs,
    validate_outputs,
)

__all__ = ["PrefectManager", "prefect_parameter_limit"]

LOGGER = logging.getLogger(__name__)

_PREFECT_PAGE = 200
"""The most flow runs the Prefect API returns per request (its default limit)."""

_DURATION_SCAN_LIMIT = 10_000
"""The most jobs a duration filter examines (after Prefect's own filtering)."""

_ADDED_JOB_TAG = "pygeoapi-added-job"
"""Tag of a job that `add_job` recorded: this server's job even when its process is not
configured (pygeoapi's own callers record jobs of any process id)."""

_ADDED_JOB_KEY = "pygeoapi-job:"
"""Prefix of the idempotency key of a job `add_job` recorded under a caller's identifier.

Prefect chooses flow run ids: such a job's flow run keeps its own id, and answers to the
caller's identifier too (its idempotency key is this prefix and the identifier)."""


def prefect_parameter_limit() -> int | None:
    """The largest flow-run parameters the Prefect API accepts, in bytes of compact JSON.

    Prefect's `server.api.max_parameter_size` (`PREFECT_SERVER_API_MAX_PARAMETER_SIZE`,
    512 KiB by default), as this process's Prefect settings give it; None when it is 0
    (no limit).
    """
    limit = get_current_settings().server.api.max_parameter_size
    return limit or None


def _one_run_may_fail(err: BaseException) -> bool:
    """Whether a failed read of many flow runs may be the fault of one (an API error 500)."""
    return isinstance(err, PrefectHTTPStatusError) and err.response.status_code == 500


_START_TIMEOUT_SECONDS = 240.0
"""How long a serving process waits for its Prefect side before it serves anyway."""


def _serving() -> bool:
    """Whether this process builds the manager to serve pygeoapi's Flask app.

    True where pygeoapi's Flask app is being imported to serve: in the process of Flask's
    reloader that serves under `pygeoapi serve`, in `pygeoapi-prefect serve`, under a
    WSGI server. False elsewhere, so that `pygeoapi openapi generate` and the reloader's
    first process (which only watches files: `pygeoapi serve` runs Flask with
    `debug=True`) contact nothing.
    """
    if "pygeoapi.flask_app" not in sys.modules:
        return False
    if is_running_from_reloader():
        return True
    context = click.get_current_context(silent=True)
    command = context.command if context is not None else None
    return not (
        command is not None
        and command.name == "serve"
        and getattr(command.callback, "__module__", None) == "pygeoapi"
    )


def _within(value: float | None, low: float | None, high: float | None) -> bool:
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


class PrefectManager(BaseManager):  # type: ignore[misc]
    """A pygeoapi manager that runs every OGC job as a Prefect flow run.

    Configure it in pygeoapi's config as
    `server.manager.name: pygeoapi_prefect.manager.PrefectManager`; see
    `pygeoapi_prefect.settings.ManagerSettings` for its options. Constructing it contacts
    nothing: the Prefect API is reached (or the embedded one started) at first use. It
    validates the settings of the manager and of every process, so that a config mistake
    stops the server as it starts.

    Args:
        manager_def: pygeoapi's `server.manager` mapping, with `processes` added.

    Raises:
        ConfigError: If a setting does not validate (named in the message).
    """

    def __init__(self, manager_def: dict[str, Any]) -> None:
        super().__init__(manager_def)
        self.is_async = True
        self.supports_subscribing = True
        self.settings = ManagerSettings.from_manager_def(manager_def)
        self._process_settings = {
            process_id: process_settings_of(process_id, resource)
            for process_id, resource in self.processes.items()
        }
        self.connection = PrefectConnection(
            self.settings.api_url,
            self.settings.database,
            read_timeout=self.settings.api_read_timeout,
            write_timeout=self.settings.api_write_timeout,
        )
        self.results = ResultStorage(self.settings, self._process_result_storage)
        self.runner = EmbeddedRunner(
            self.connection,
            cancel_grace=self.settings.cancel_grace,
            max_running=self.settings.max_running_jobs,
        )
        self._flow_ids: dict[str, uuid.UUID] = {}
        self._deployment_ids: dict[str, uuid.UUID] = {}
        self._recovery_started = False
        self._job_reader = CoalescingReader(
            self._read_job_records, read_one=self._read_job_record, split_on=_one_run_may_fail
        )
        self._counter = ThreadPoolExecutor(4, thread_name_prefix="pygeoapi-prefect-count")
        _import_processors(self.processes)
        self._started: threading.Event | None = None
        self._lock_start = threading.Lock()
        if _serving():
            self.start(wait=_START_TIMEOUT_SECONDS)

    def start(self, wait: float = 0) -> bool:
        """Get the Prefect side ready now rather than at the first request.

        In a thread of its own: reach the Prefect API (starting the embedded one, which
        migrates a new database), save the result storage block, create each configured
        process's flow, start the job launcher and the recovery of a previous server's
        jobs. The manager calls this itself when built by a serving process (see
        `_serving`), and waits for it, so that the server answers once its jobs can run.

        Args:
            wait: Seconds to wait for it (0: return at once).

        Returns:
            True once it is done (or failed: requests then report the cause), within
            `wait`. Calling it again waits for the same start.
        """
        with self._lock_start:
            if self._started is None:
                self._started = threading.Event()
                threading.Thread(
                    target=self._start_up,
                    args=(self._started,),
                    name="pygeoapi-prefect-start",
                    daemon=True,
                ).start()
            done = self._started
        return done.wait(wait) if wait else done.is_set()

    def _start_up(self, done: threading.Event) -> None:
        started = time.monotonic()
        launcher: threading.Thread | None = None
        try:
            embedded = [p for p in self.processes if not self.process_settings(p).deployment]
            if embedded:
                # The launcher's imports take as long as the embedded API's start: together.
                launcher = threading.Thread(target=self._warm_launcher, daemon=True)
                launcher.start()
            with self._api():
                self._result_storage(ProcessSettings())
                for process_id in embedded:
                    self._flow_id(job_flow_name(process_id, self.get_processor(process_id)))
            if launcher is not None:
                launcher.join(_START_TIMEOUT_SECONDS)
            LOGGER.info("Prefect side ready after %.1f s", time.monotonic() - started)
        except Exception:
            LOGGER.warning(
                "Could not get the Prefect API ready at start-up; requests will try again",
                exc_info=True,
            )
        finally:
            done.set()

    def _warm_launcher(self) -> None:
        try:
            self.runner.warm_up(wait=_START_TIMEOUT_SECONDS)
        except Exception:
            LOGGER.warning("Could not start the job launcher at start-up", exc_info=True)

    # -- processes ----------------------------------------------------------------------

    def get_processor(self, process_id: str) -> BaseProcessor:
        """Return the processor of a process, advertising that its jobs can be dismissed.

        Args:
            process_id: The process id.

        Returns:
            A processor instance.

        Raises:
            UnknownProcessError: If the process is not configured.
        """
        processor: BaseProcessor = super().get_processor(process_id)
        options = list(processor.metadata.get("jobControlOptions", []))
        if "dismiss" not in options:
            processor.metadata = {**processor.metadata, "jobControlOptions": [*options, "dismiss"]}
        return processor

    def processes_outputs(self, process_id: str | None) -> dict[str, Any]:
        """Return the outputs a process describes (none for an unknown process).

        Args:
            process_id: The process id.

        Returns:
            The `outputs` of its description, by output id.
        """
        if process_id is None or process_id not in self.processes:
            return {}
        outputs: dict[str, Any] = self.get_processor(process_id).metadata.get("outputs", {})
        return outputs

    def process_settings(self, process_id: str) -> ProcessSettings:
        """Return the Prefect options of a configured process.

        Args:
            process_id: The process id.

        Returns:
            The process's `processor.prefect` options (defaults when absent), as
            validated when the manager was constructed (or, for a process added to
            `processes` since, when first asked for).
        """
        settings = self._process_settings.get(process_id)
        if settings is None:
            settings = process_settings_of(process_id, self.processes[process_id])
            self._process_settings[process_id] = settings
        return settings

    def _process_result_storage(self) -> list[str]:
        """The `result_storage` slugs the configured processes name."""
        slugs = (self.process_settings(process_id).result_storage for process_id in self.processes)
        return [slug for slug in slugs if slug]

    # -- reading jobs -------------------------------------------------------------------

    @contextmanager
    def _api(self) -> Iterator[None]:
        with prefect_api_errors():
            if not self._recovery_started:
                self._recovery_started = True
                threading.Thread(
                    target=self._recover, name="pygeoapi-prefect-recovery", daemon=True
                ).start()
            yield

    def _recover(self) -> None:
        """Take over this host's embedded jobs that stopped server processes left behind.

        At first use, then every `recovery_interval`: a server on this host may die at any
        time. (Prefect's own zombie detection, an automation on missing heartbeats, would
        need heartbeats from every job process, which direct jobs do not send, and could
        only change a run's state: stopping or starting a process takes one on this host,
        and Prefect's runner, too, polls for the runs it must stop.)
        """
        while True:
            try:
                tags = self._job_tags()
                if tags is not None:
                    self.runner.recover(self._launch_again, tags)
            except Exception:
                LOGGER.warning("Could not recover the jobs of a previous server", exc_info=True)
            time.sleep(self.settings.recovery_interval)

    def _launch_again(self, flow_run: FlowRun) -> JobLaunch | None:
        process_id = process_id_of(flow_run)
        if process_id is None or process_id not in self.processes:
            return None
        settings = self.process_settings(process_id)
        subscribed = LABEL_SUBSCRIBER in (flow_run.labels or {})
        return JobLaunch(
            flow_run=flow_run,
            process_id=process_id,
            processor_def=self.processes[process_id]["processor"],
            settings=settings,
            result_storage=self._result_storage(settings),
            direct=self._runs_direct(self.get_processor(process_id), settings, subscribed),
        )

    def _job_tags(self, process_ids: tuple[str, ...] = ()) -> FlowRunFilterTags | None:
        """The tags filter of this server's jobs (of `process_ids`, or of any process).

        A job carries this server's tag and the tag of a configured process (or of a job
        `add_job` recorded). None when no job can match (no configured process among
        `process_ids`).
        """
        processes = [p for p in process_ids or self.processes if p in self.processes]
        wanted = [process_tag(p) for p in processes]
        if not process_ids:
            wanted.append(_ADDED_JOB_TAG)  # (a job `add_job` recorded, of any process)
        if not wanted:
            return None
        return FlowRunFilterTags(
            all_=[JOB_TAG, server_tag(self.settings.server_label)], any_=wanted
        )

    def _is_job(self, flow_run: FlowRun) -> bool:
        """Whether a flow run is a job of this server (what `_job_tags` selects)."""
        return (
            JOB_TAG in flow_run.tags
            and server_tag(self.settings.server_label) in flow_run.tags
            and (process_id_of(flow_run) in self.processes or _ADDED_JOB_TAG in flow_run.tags)
        )

    def _read_job_run(self, job_id: str) -> FlowRun:
        run_id = parse_job_id(job_id)
        if run_id is None:
            raise JobNotFoundError(f"{job_id!r} is not a job id")
        try:
            flow_run = self.connection.client.read_flow_run(run_id)
        except ObjectNotFound as err:
            added = self._read_added_runs([run_id])
            if not added:
                raise JobNotFoundError(job_id) from err
            return added[0]
        if not self._is_job(flow_run):
            raise JobNotFoundError(job_id)
        return flow_run

    def _read_added_runs(self, identifiers: list[uuid.UUID]) -> list[FlowRun]:
        """The flow runs of jobs that `add_job` recorded under these identifiers."""
        tags = self._job_tags()
        if tags is None:
            return []
        return self.connection.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(
                    any_=[f"{_ADDED_JOB_KEY}{identifier}" for identifier in identifiers]
                ),
                tags=tags,
            ),
            limit=len(identifiers),
        )

    def _records(self, flow_runs: list[FlowRun]) -> list[dict[str, Any]]:
        running = [
            run.id
            for run in flow_runs
            if job_status(run.state_type, run.state_name) == JobStatus.running
        ]
        progress = read_progress(self.connection.client, running)
        errors = last_errors(self.connection.client, flow_runs)
        ui_url = self.ui_url
        records = [
            job_record(run, progress.get(run.id), errors.get(run.id), ui_url) for run in flow_runs
        ]
        for run, record in zip(flow_runs, records, strict=True):
            key = run.idempotency_key or ""
            if key.startswith(_ADDED_JOB_KEY):
                record["identifier"] = key.removeprefix(_ADDED_JOB_KEY)
        return records

    @property
    def ui_url(self) -> str | None:
        """The Prefect UI jobs link to: `ui_url`, or the embedded API's own UI."""
        return self.settings.ui_url or self.connection.ui_url

    def find_jobs(self, query: JobQuery) -> tuple[list[dict[str, Any]], int]:
        """Find jobs by the OGC job-list filters, newest first.

        Process, status and creation time are filters of the Prefect query itself. A
        duration filter narrows the query (jobs must have started, long enough ago), and
        the exact duration is then checked on what Prefect returns.

        Args:
            query: The filters and the page.

        Returns:
            (the page of job records, how many jobs match in all).
        """
        now = datetime.now(UTC)
        tags = self._job_tags(query.process_ids)
        if tags is None:
            return [], 0
        flow_run_filter = FlowRunFilter(tags=tags)
        if query.statuses:
            flow_run_filter.state = state_filter(query.statuses)
        if query.created_after or query.created_before:
            flow_run_filter.expected_start_time = FlowRunFilterExpectedStartTime(
                after_=query.created_after, before_=query.created_before
            )
        durations = query.min_duration is not None or query.max_duration is not None
        if durations:
            flow_run_filter.start_time = FlowRunFilterStartTime(
                is_null_=False,
                before_=now - timedelta(seconds=query.min_duration or 0),
            )
        with self._api():
            if not durations:
                # The count scans every matching flow run: it runs beside the page's query.
                counting = self._counter.submit(
                    self.connection.client.count_flow_runs, flow_run_filter=flow_run_filter
                )
                flow_runs = self._read_flow_runs(flow_run_filter, query.limit, query.offset)
                return self._records(flow_runs), counting.result()
            matching = [
                run
                for run in self._read_flow_runs(flow_run_filter, _DURATION_SCAN_LIMIT, 0)
                if _within(duration_of(run, now), query.min_duration, query.max_duration)
            ]
            end = None if query.limit is None else query.offset + query.limit
            page = matching[query.offset : end]
            return self._records(page), len(matching)

    def get_jobs(
        self,
        status: JobStatus | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> dict[str, Any]:
        """List jobs, newest first, paged by the Prefect API.

        Args:
            status: Only jobs with this status.
            limit: At most this many jobs.
            offset: Skip this many jobs first.

        Returns:
            `{"jobs": [...], "numberMatched": total}`.
        """
        statuses = (JobStatus(status),) if status is not None else ()
        try:
            query = JobQuery(statuses=statuses, limit=limit, offset=offset or 0)
        except JobQueryError as err:
            raise InvalidQueryError(str(err)) from None
        jobs, matched = self.find_jobs(query)
        for job in jobs:
            # pygeoapi's API layer re-sorts each page by `started`, which must be a string.
            job["started"] = job["started"] or job["created"]
        return {"jobs": jobs, "numberMatched": matched}

    def _read_flow_runs(
        self, flow_run_filter: FlowRunFilter, limit: int | None, offset: int
    ) -> list[FlowRun]:
        """Read a page of job flow runs, newest first, in requests Prefect accepts."""
        wanted = limit if limit is not None else _PREFECT_PAGE
        flow_runs: list[FlowRun] = []
        while len(flow_runs) < wanted:
            chunk = self.connection.client.read_flow_runs(
                flow_run_filter=flow_run_filter,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=min(_PREFECT_PAGE, wanted - len(flow_runs)),
                offset=offset + len(flow_runs),
            )
            flow_runs += chunk
            if len(chunk) < min(_PREFECT_PAGE, wanted):
                break
        return flow_runs

    def get_job(self, job_id: str) -> dict[str, Any]:
        """Return one job.

        Args:
            job_id: The job id (a flow run id).

        Returns:
            The job record.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        run_id = parse_job_id(job_id)
        if run_id is None:
            raise JobNotFoundError(f"{job_id!r} is not a job id")
        with self._api():
            _ = self.connection.api_url  # (a cold start of the embedded API: not in the wait)
            try:
                record = self._job_reader.read(run_id, timeout=self.settings.api_read_timeout)
            except TimeoutError as err:
                raise PrefectUnavailableError(str(err)) from err
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    def read_job(self, job_id: str) -> dict[str, Any]:
        """Return one job, read on its own (`read_flow_run`) rather than in a batch.

        Args:
            job_id: The job id (a flow run id).

        Returns:
            The job record.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        with self._api():
            return self._records([self._read_job_run(job_id)])[0]

    def _read_job_record(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        """Read one job on its own (for `_job_reader`, when its batch fails)."""
        try:
            flow_run = self._read_job_run(str(run_id))
        except JobNotFoundError:
            return None
        return self._records([flow_run])[0]

    def _read_job_records(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Read several jobs in one query (the batches of `_job_reader`)."""
        tags = self._job_tags()
        if tags is None:
            return {}
        flow_runs = self.connection.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids), tags=tags),
            limit=len(run_ids),
        )
        missing = set(run_ids) - {run.id for run in flow_runs}
        if missing:
            flow_runs += self._read_added_runs(sorted(missing))
        records = self._records(flow_runs)
        return {uuid.UUID(record["identifier"]): record for record in records}

    def get_job_result(self, job_id: str) -> tuple[str | None, Any]:
        """Return the output of a successful job.

        Args:
            job_id: The job id.

        Returns:
            (media type, output).

        Raises:
            JobNotFoundError: If there is no such job.
            ResultNotAvailableError: If the job did not succeed, or has no readable result
                (gone, not stored as JSON, or in storage this server did not configure).
        """
        with self._api():
            flow_run = self._read_job_run(job_id)
            status = job_status(flow_run.state_type, flow_run.state_name)
            if status != JobStatus.successful or flow_run.state is None:
                raise ResultNotAvailableError(f"Job {job_id} is {status.value}: it has no results")
            try:
                output = self.results.read(self.connection.client, flow_run.state)
            except ResultUnavailableError as err:
                # A 404, not pygeoapi's 500: a stored result that is gone, or one this
                # server refuses to read, is the job's own fault, not the server's.
                LOGGER.warning("Result of job %s: %s", job_id, err)
                raise ResultNotAvailableError(
                    f"Job {job_id} has no readable result (see the server log)"
                ) from err
        return output["mimetype"], output["value"]

    # -- writing jobs -------------------------------------------------------------------

    def _flow_id(self, flow_name: str) -> uuid.UUID:
        flow_id = self._flow_ids.get(flow_name)
        if flow_id is None:
            flow_id = self.connection.client.create_flow_from_name(flow_name)
            self._flow_ids[flow_name] = flow_id
        return flow_id

    def _tags(self, process_id: str, settings: ProcessSettings) -> list[str]:
        return [
            JOB_TAG,
            server_tag(self.settings.server_label),
            process_tag(process_id),
            *self.settings.tags,
            *settings.tags,
        ]

    def _create_flow_run(
        self,
        flow_name: str,
        process_id: str,
        parameters: dict[str, Any],
        settings: ProcessSettings,
        labels: dict[str, str] | None = None,
        state: State | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[FlowRun, bool]:
        """Create a job's flow run (with a key, the Prefect API may answer with its run).

        Returns:
            (the flow run, whether this call created it).
        """
        client = self.connection.client
        _check_parameters(parameters)
        context = creation_context()
        body = FlowRunCreate(
            idempotency_key=idempotency_key,
            context=context if idempotency_key else {},
            labels=labels or {},
            flow_id=self._flow_id(flow_name),
            name=f"{process_id}-{generate_slug(2)}",
            parameters=parameters,
            tags=self._tags(process_id, settings),
            state=to_state_create(state or Scheduled(scheduled_time=datetime.now(UTC))),
            empirical_policy=_retry_policy(settings),
        )
        response = client.request(
            "POST", "/flow_runs/", json=body.model_dump(mode="json", exclude_unset=True)
        )
        flow_run = FlowRun.model_validate(response.json())
        if idempotency_key is not None and not created_here(flow_run, context):
            return flow_run, False
        flow_run.parameters = parameters
        if "job_id" in parameters:
            flow_run = self._set_job_id(flow_run)
        return flow_run, True

    def _create_job(
        self,
        create: Callable[[str | None], tuple[FlowRun, bool]],
        key: str | None,
        settings: ProcessSettings,
    ) -> tuple[FlowRun, bool]:
        """Create a job's flow run, or find the earlier identical job (see `dedup`).

        Args:
            create: Creates the flow run with an idempotency key (or none), returning it
                and whether it is new.
            key: The request's deduplication key; None when the process does not
                deduplicate.
            settings: The process's options (its `dedup` window).

        Returns:
            (the flow run, whether it is new). An earlier job that failed, was dismissed
            or is older than the window does not count: the next key of its chain is
            tried, until a job counts or a new one is created.
        """
        if key is None:
            return create(None)
        attempt = key
        while True:
            flow_run, created = create(attempt)
            if created or counts(flow_run, settings.dedup_window):
                return flow_run, created
            LOGGER.debug("Earlier job %s does not count for deduplication", flow_run.id)
            attempt = next_key(key, flow_run)

    def _dedup_key(
        self,
        process_id: str,
        processor: BaseProcessor,
        inputs: dict[str, Any],
        requested_outputs: dict[str, Any] | None,
        response: str,
    ) -> str | None:
        """The deduplication key of an execute request; None if the process has no dedup."""
        if not self.process_settings(process_id).dedup:
            return None
        return dedup_key(
            self.settings.server_label,
            process_id,
            processor.metadata.get("version"),
            inputs,
            requested_outputs,
            response,
        )

    def add_job(self, job_metadata: dict[str, Any]) -> str:
        """Record a job a caller gives, without running it, as pygeoapi's managers do.

        pygeoapi's own execution calls this; this manager's `execute_process` creates
        jobs itself, so this serves code that manages jobs by hand. The job is a flow run
        in the state its `status` names; a successful job's output is read from its
        `location` (JSON for a JSON media type, else bytes, as pygeoapi's TinyDB manager
        reads it) and kept as a Prefect result, so that `get_job_result` answers it.

        Args:
            job_metadata: pygeoapi's job record: `process_id` (required), `identifier`
                (a UUID; the job then answers to it), `status`, `message`, `location`,
                `mimetype`.

        Returns:
            The job id: the given identifier, else the flow run's id.

        Raises:
            ValueError: If the identifier is not a UUID.
        """
        process_id = str(job_metadata["process_id"])
        identifier = job_metadata.get("identifier")
        alias = None if identifier is None else parse_job_id(str(identifier))
        if identifier is not None and alias is None:
            raise ValueError(f"job identifier {identifier!r} is not a UUID")
        status = JobStatus(job_metadata.get("status") or JobStatus.accepted.value)
        mimetype = job_metadata.get("mimetype")
        with self._api():
            state = self._given_state(
                status, job_metadata.get("message"), job_metadata.get("location"), mimetype
            )
            flow_run, _ = self._create_flow_run(
                process_id,
                process_id,
                job_parameters({}, None, "raw"),
                ProcessSettings(tags=[_ADDED_JOB_TAG]),
                {LABEL_MIMETYPE: str(mimetype)} if mimetype else None,
                idempotency_key=None if alias is None else f"{_ADDED_JOB_KEY}{alias}",
            )
            if state.type != StateType.SCHEDULED:
                # (Prefect's API cannot create a flow run in a state that carries a result)
                self.connection.client.set_flow_run_state(flow_run.id, state, force=True)
        return str(alias or flow_run.id)

    def update_job(self, job_id: str, update_dict: dict[str, Any]) -> bool:
        """Update a job's status, message, media type and (when successful) output.

        Args:
            job_id: The job id.
            update_dict: pygeoapi's job fields to change (`status`, `message`,
                `mimetype`, and `location`, read as in `add_job`).

        Returns:
            True when the job was updated.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        with self._api():
            flow_run = self._read_job_run(job_id)
            mimetype = update_dict.get("mimetype")
            if mimetype:
                self.connection.client.update_flow_run_labels(
                    flow_run.id, {LABEL_MIMETYPE: str(mimetype)}
                )
            new_status = update_dict.get("status")
            if new_status is None:
                return True
            state = self._given_state(
                JobStatus(new_status),
                update_dict.get("message"),
                update_dict.get("location"),
                mimetype or (flow_run.labels or {}).get(LABEL_MIMETYPE),
            )
            result: OrchestrationResult[Any] = self.connection.client.set_flow_run_state(
                flow_run.id, state, force=True
            )
        return result.state is not None

    def _given_state(self, status: JobStatus, message: Any, location: Any, mimetype: Any) -> State:
        """The flow-run state of a job a caller records (`add_job`, `update_job`)."""
        text = None if message is None else str(message)
        output = _read_location(location, mimetype) if status == JobStatus.successful else None
        if output is None:
            return new_state(status, text)
        record = persist_output(self._result_storage(ProcessSettings()), output)
        return new_state(status, text, record)

    def delete_job(self, job_id: str) -> bool:
        """Dismiss a job, or remove a finished one with its results.

        A job that has not finished is cancelled: its flow run ends CANCELLED and its
        process is stopped (here, or by whichever replica or worker runs it). A finished
        job's result is deleted from result storage and its flow run from Prefect.

        Args:
            job_id: The job id.

        Returns:
            True.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        with self._api():
            flow_run = self._read_job_run(job_id)
            state = flow_run.state
            client = self.connection.client
            if state is not None and state.is_final():
                self.results.delete(client, state)
                client.delete_flow_run(flow_run.id)
                return True
            if self.runner.cancel(flow_run.id) or self.runner.dismiss_orphan(flow_run):
                return True
            if state is None or state.type in (StateType.SCHEDULED, StateType.PAUSED):
                client.set_flow_run_state(
                    flow_run.id, Cancelled(message="Job dismissed"), force=True
                )
            else:
                client.set_flow_run_state(
                    flow_run.id, Cancelling(message="Job dismissed"), force=True
                )
                # Whoever runs it (a replica, a worker) stops it; answer once it has.
                self._await_final(flow_run.id, timeout=self.settings.dismiss_wait)
        return True

    def _await_final(self, run_id: uuid.UUID, timeout: float) -> bool:
        """Poll a flow run (that another process runs) until it is final or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            flow_run = self.connection.client.read_flow_run(run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    # -- execution ----------------------------------------------------------------------

    def _is_async(
        self, processor: BaseProcessor, execution_mode: RequestedProcessExecutionMode | None
    ) -> tuple[bool, dict[str, str] | None]:
        """Decide sync or async as pygeoapi does, and the Preference-Applied header."""
        options = processor.metadata.get("jobControlOptions", [])
        respond_async = RequestedProcessExecutionMode.respond_async.value
        wait = RequestedProcessExecutionMode.wait.value
        if execution_mode == RequestedProcessExecutionMode.respond_async:
            if ProcessExecutionMode.async_execute.value in options:
                return True, {"Preference-Applied": respond_async}
            return False, {"Preference-Applied": wait}
        if ProcessExecutionMode.sync_execute.value not in options:
            return True, {"Preference-Applied": respond_async}
        if execution_mode == RequestedProcessExecutionMode.wait:
            return False, None
        return False, {"Preference-Applied": wait}

    def execute_process(
        self,
        process_id: str,
        data_dict: dict[str, Any],
        execution_mode: RequestedProcessExecutionMode | None = None,
        requested_outputs: dict[str, Any] | None = None,
        subscriber: Subscriber | None = None,
        requested_response: str | None = RequestedResponse.raw.value,
    ) -> tuple[str, str | None, Any, JobStatus, dict[str, str] | None]:
        """Run a process as a Prefect flow run, synchronously or in the background.

        Args:
            process_id: The process id.
            data_dict: The `inputs` of the execute request.
            execution_mode: The client's `Prefer` preference, if any.
            requested_outputs: The `outputs` of the execute request.
            subscriber: Callback URLs, checked now and called from wherever the job runs.
            requested_response: `raw` or `document`.

        Returns:
            (job id, media type, outputs, status, extra response headers).

        Raises:
            UnknownProcessError: If the process is not configured.
            InvalidInputError: If an input does not fit the process description (400).
            ProcessorExecuteError: If the job cannot be created or a sync job times out.
        """
        processor = self.get_processor(process_id)
        run_async, headers = self._is_async(processor, execution_mode)
        response = requested_response or RequestedResponse.raw.value
        settings = self.process_settings(process_id)
        inputs = data_dict if data_dict is not None else {}
        try:
            validate_bounds(
                {
                    "inputs": inputs,
                    "outputs": requested_outputs,
                    "response": response,
                    "subscriber": subscriber_document(subscriber),
                },
                prefect_parameter_limit(),
            )
            validate_inputs(processor.metadata, inputs)
            validate_outputs(processor.metadata, requested_outputs)
            labels = subscriber_labels(subscriber, self.settings.callback_allow)
        except RequestTooLargeError as err:
            raise PayloadTooLargeError(str(err)) from None
        except (InputValidationError, CallbackURLError) as err:
            raise InvalidInputError(str(err)) from err
        if isinstance(processor, BasePrefectProcessor):
            request = ExecuteRequest(inputs=inputs, outputs=requested_outputs, response=response)
            parameters = flow_parameters(None, request, processor.process_description)
        else:
            parameters = job_parameters(inputs, requested_outputs, response)
        direct = self._runs_direct(processor, settings, bool(labels))
        key = self._dedup_key(process_id, processor, inputs, requested_outputs, response)
        if not run_async and direct and settings.concurrency_limit is None:
            return self._execute_inline(process_id, processor, parameters, settings, headers, key)
        with self._api():
            if settings.deployment:
                flow_run, created = self._create_job(
                    lambda k: self._create_deployment_run(
                        process_id, parameters, settings, labels, k
                    ),
                    key,
                    settings,
                )
            else:
                flow_run, created = self._create_job(
                    lambda k: self._create_flow_run(
                        job_flow_name(process_id, processor),
                        process_id,
                        parameters,
                        settings,
                        {**labels, LABEL_RUNNER: runner_id()},
                        idempotency_key=k,
                    ),
                    key,
                    settings,
                )
                if created:
                    self.runner.start(
                        JobLaunch(
                            flow_run=flow_run,
                            process_id=process_id,
                            processor_def=self.processes[process_id]["processor"],
                            settings=settings,
                            result_storage=self._result_storage(settings),
                            direct=direct,
                        )
                    )
        job_id = str(flow_run.id)
        if created:
            LOGGER.info("Job %s of %s started as flow run %s", job_id, process_id, flow_run.name)
        else:
            LOGGER.info("Request to %s deduplicated: earlier job %s", process_id, job_id)
            headers = {**(headers or {}), DEDUP_HEADER: job_id}
        if run_async:
            return job_id, "application/json", None, JobStatus.accepted, headers
        mimetype, outputs, status = self._sync_outcome(flow_run.id)
        return job_id, mimetype, outputs, status, headers

    def _result_storage(self, settings: ProcessSettings) -> WritableFileSystem:
        """The storage block a job of a process persists its output to."""
        return self.results.block_for(self.connection.api_url, settings.result_storage)

    def _runs_direct(
        self, processor: BaseProcessor, settings: ProcessSettings, subscribed: bool
    ) -> bool:
        """Whether a job runs without Prefect's flow engine (see `runtime.direct`)."""
        return (
            self.settings.direct_execution
            and not isinstance(processor, BasePrefectProcessor)
            and not settings.deployment
            and not settings.retries
            and settings.timeout is None
            and not subscribed
        )

    def _execute_inline(
        self,
        process_id: str,
        processor: BaseProcessor,
        parameters: dict[str, Any],
        settings: ProcessSettings,
        headers: dict[str, str] | None,
        key: str | None = None,
    ) -> tuple[str, str | None, Any, JobStatus, dict[str, str] | None]:
        with self._api():
            result_storage = self._result_storage(settings)
            flow_run, created = self._create_job(
                lambda k: self._create_flow_run(
                    job_flow_name(process_id, processor),
                    process_id,
                    parameters,
                    settings,
                    {LABEL_RUNNER: runner_id()},
                    state=Running(),
                    idempotency_key=k,
                ),
                key,
                settings,
            )
        if not created:
            # An earlier identical job: its outcome, once final (it may run elsewhere).
            LOGGER.info("Request to %s deduplicated: earlier job %s", process_id, flow_run.id)
            mimetype, outputs, status = self._sync_outcome(flow_run.id)
            return (
                str(flow_run.id),
                mimetype,
                outputs,
                status,
                {**(headers or {}), DEDUP_HEADER: str(flow_run.id)},
            )
        with self._api():
            LOGGER.info(
                "Job %s of %s runs inline as flow run %s", flow_run.id, process_id, flow_run.name
            )
            outcome = run_direct(
                self.connection.client, flow_run, processor, parameters, result_storage
            )
        job_id = str(flow_run.id)
        if outcome.output is not None:
            return (
                job_id,
                outcome.output["mimetype"],
                outcome.output["value"],
                JobStatus.successful,
                headers,
            )
        return job_id, *self._failure(outcome.message or "Job failed"), headers

    def _create_deployment_run(
        self,
        process_id: str,
        parameters: dict[str, Any],
        settings: ProcessSettings,
        labels: dict[str, str],
        idempotency_key: str | None = None,
    ) -> tuple[FlowRun, bool]:
        """Create a job's flow run from the process's deployment, for a worker to run.

        Returns:
            (the flow run, whether this call created it: with an idempotency key, the
            Prefect API may answer with the run that already has it).
        """
        client = self.connection.client
        _check_parameters(parameters)
        name = str(settings.deployment)
        deployment_id = self._deployment_ids.get(name)
        if deployment_id is None:
            try:
                deployment_id = client.read_deployment_by_name(name).id
            except ObjectNotFound as err:
                raise DeploymentNotFoundError(
                    f"Process {process_id} is configured to run on deployment {name!r}, which "
                    f"does not exist: run `pygeoapi-prefect deploy-process {process_id}`"
                ) from err
            self._deployment_ids[name] = deployment_id
        needs_job_id = "job_id" in parameters
        # A worker only picks up SCHEDULED runs: hold the run until it is complete.
        hold = needs_job_id or settings.retries > 0
        state: State[Any] = Pending() if hold else Scheduled(scheduled_time=datetime.now(UTC))
        context = creation_context()
        body = DeploymentFlowRunCreate(
            parameters=parameters,
            context=context if idempotency_key else {},
            state=to_state_create(state),
            tags=self._tags(process_id, settings),
            name=f"{process_id}-{generate_slug(2)}",
            idempotency_key=idempotency_key,
            job_variables=settings.job_variables or None,
            labels=dict(labels),
        )
        if settings.work_queue:
            # (set apart, as Prefect's client does: older APIs do not take the field)
            body.work_queue_name = settings.work_queue
        # (as `create_flow_run_from_deployment` does, with the context of `dedup`)
        response = client.request(
            "POST",
            "/deployments/{id}/create_flow_run",
            path_params={"id": deployment_id},
            json=body.model_dump(mode="json", exclude_unset=True),
        )
        flow_run = FlowRun.model_validate(response.json())
        if idempotency_key is not None and not created_here(flow_run, context):
            return flow_run, False
        # The run's own retry policy: the Prefect server orchestrates retries from it (the
        # flow's retries count only where the run sets none).
        policy = _retry_policy(settings) if settings.retries else None
        if needs_job_id:
            flow_run = self._set_job_id(flow_run, policy)
        elif policy is not None:
            client.update_flow_run(flow_run.id, empirical_policy=policy)
        if hold:
            client.set_flow_run_state(
                flow_run.id, Scheduled(scheduled_time=datetime.now(UTC)), force=True
            )
        return flow_run, True

    def _set_job_id(self, flow_run: FlowRun, policy: FlowRunPolicy | None = None) -> FlowRun:
        """Give a flow run its own id as its `job_id` parameter (and `policy`, if any)."""
        parameters = {**flow_run.parameters, "job_id": str(flow_run.id)}
        self.connection.client.update_flow_run(
            flow_run.id, parameters=parameters, empirical_policy=policy
        )
        flow_run.parameters = parameters
        return flow_run

    def _sync_outcome(self, run_id: uuid.UUID) -> tuple[str | None, Any, JobStatus]:
        timeout = self.settings.sync_timeout
        if self.runner.owns(run_id):
            finished = self.runner.wait(run_id, timeout)
        else:
            with self._api():
                finished = self._await_final(run_id, timeout)
        if not finished:
            raise JobStillRunningError(
                f"Job {run_id} is still running after {self.settings.sync_timeout:g} s; "
                f"it goes on: poll /jobs/{run_id} for its status"
            )
        with self._api():
            flow_run = self.connection.client.read_flow_run(run_id)
            status = job_status(flow_run.state_type, flow_run.state_name)
            if status == JobStatus.successful and flow_run.state is not None:
                try:
                    output = self.results.read(self.connection.client, flow_run.state)
                except ResultUnavailableError as err:
                    raise ProcessorExecuteError(user_msg=f"Job {run_id}: {err}") from err
                return output["mimetype"], output["value"], status
            message = self._records([flow_run])[0]["message"]
        return self._failure(message)

    @staticmethod
    def _failure(message: str) -> tuple[str, Any, JobStatus]:
        """The response to a synchronous job that did not succeed, as pygeoapi shapes it."""
        code = "InvalidParameterValue"
        return (
            "application/json",
            ExceptionDocument(
                type=code, code=code, description=f"Error executing process: {message}"
            ).to_json_dict(),
            JobStatus.failed,
        )

    def __repr__(self) -> str:
        return f"<PrefectManager> {self.name}"


def _import_processors(processes: dict[str, Any]) -> None:
    """Import each configured processor's class: one that does not import stops the start."""
    for process_id, resource in processes.items():
        name = str((resource.get("processor") or {}).get("name"))
        path = name if "." in name else PLUGINS["process"].get(name)
        if path is None:
            continue  # pygeoapi's own "Plugin ... not found" says it at first use
        module, _, class_name = path.rpartition(".")
        try:
            getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError) as err:
            raise ProcessorImportError(process_id, name, err) from err


def _read_location(location: Any, mimetype: Any) -> JobOutput | None:
    """Read a job's output from the file a caller names, as pygeoapi's TinyDB manager does."""
    if not location:
        return None
    path = Path(str(location))
    try:
        if mimetype in (None, "application/json", "application/ld+json"):
            with path.open(encoding="utf-8") as handle:
                return JobOutput(mimetype="application/json", value=json.load(handle))
        return JobOutput(mimetype=str(mimetype), value=path.read_bytes())
    except (OSError, ValueError) as err:
        LOGGER.warning("The output of a recorded job cannot be read from %s: %s", path, err)
        return None


def _check_parameters(parameters: dict[str, Any]) -> None:
    """Refuse flow-run parameters that the Prefect API would refuse, or fail to read back.

    The execute request was bounded already (`validate_bounds`); the parameters add the
    process description of a `BasePrefectProcessor`, and two levels of nesting. A
    `job_id` parameter is measured as the flow run id it becomes once the run exists.
    """
    if "job_id" in parameters:
        parameters = {**parameters, "job_id": str(uuid.UUID(int=0))}
    try:
        validate_bounds(
            parameters,
            prefect_parameter_limit(),
            name="the job's flow-run parameters",
            max_depth=MAX_DEPTH + 8,
        )
    except RequestTooLargeError as err:
        raise PayloadTooLargeError(str(err)) from None
    except InputValidationError as err:
        raise InvalidInputError(str(err)) from None


def _retry_policy(settings: ProcessSettings) -> FlowRunPolicy:
    """The retry policy of a process's jobs (a flow run's `empirical_policy`)."""
    return FlowRunPolicy(retries=settings.retries, retry_delay=round(settings.retry_delay))
