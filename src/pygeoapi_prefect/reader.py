"""How the manager reads jobs: one job, a job list, a job's result.

A job is a flow run with this server's tags (see `jobs`). `JobReader` turns Prefect
queries into OGC job records: a job list is one `read_flow_runs` query with the OGC
filters as Prefect filters (plus a count beside it), and concurrent reads of single jobs
share one query per batch (`coalesce`). Every method expects to be called inside the
manager's Prefect API error handling (`errors.prefect_api_errors`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterStartTime,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pygeoapi.process.base import JobNotFoundError
from pygeoapi.util import JobStatus

from pygeoapi_prefect.coalesce import CoalescingReader
from pygeoapi_prefect.connection import PrefectConnection
from pygeoapi_prefect.errors import PrefectUnavailableError, ResultNotAvailableError
from pygeoapi_prefect.jobs import (
    ADDED_JOB_KEY,
    ADDED_JOB_TAG,
    JOB_TAG,
    JobQuery,
    duration_of,
    job_record,
    last_errors,
    parse_job_id,
    process_id_of,
    process_tag,
    server_tag,
)
from pygeoapi_prefect.progress import read_progress
from pygeoapi_prefect.results import ResultStorage, ResultUnavailableError
from pygeoapi_prefect.status import job_status, state_filter

__all__ = ["JobReader"]

LOGGER = logging.getLogger(__name__)

_PREFECT_PAGE = 200
"""The most flow runs the Prefect API returns per request (its default limit)."""

_DURATION_SCAN_LIMIT = 10_000
"""The most jobs a duration filter examines (after Prefect's own filtering)."""


def _one_run_may_fail(err: BaseException) -> bool:
    """Whether a failed read of many flow runs may be the fault of one (an API error 500)."""
    return isinstance(err, PrefectHTTPStatusError) and err.response.status_code == 500


def _within(value: float | None, low: float | None, high: float | None) -> bool:
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


class JobReader:
    """Reads this server's jobs from the Prefect API as pygeoapi's job records.

    Args:
        connection: The Prefect API connection.
        server_label: The server's id, as its jobs' tag carries it.
        processes: pygeoapi's configured processes, by id (read as it changes).
        results: Where the jobs' outputs are stored.
        ui_url: The Prefect UI jobs link to (None: no link), asked at each read.
        read_timeout: Seconds a batched read of one job may wait.
    """

    def __init__(
        self,
        connection: PrefectConnection,
        server_label: str,
        processes: Mapping[str, Any],
        results: ResultStorage,
        ui_url: Callable[[], str | None],
        read_timeout: float,
    ) -> None:
        self._connection = connection
        self._server_label = server_label
        self._processes = processes
        self._results = results
        self._ui_url = ui_url
        self._read_timeout = read_timeout
        self._batches = CoalescingReader(
            self._read_records, read_one=self._read_record, split_on=_one_run_may_fail
        )
        self._counter = ThreadPoolExecutor(4, thread_name_prefix="pygeoapi-prefect-count")

    def job_tags(self, process_ids: tuple[str, ...] = ()) -> FlowRunFilterTags | None:
        """The tags filter of this server's jobs (of `process_ids`, or of any process).

        A job carries this server's tag and the tag of a configured process (or of a job
        `add_job` recorded).

        Args:
            process_ids: Only jobs of these processes (none: of any).

        Returns:
            The filter; None when no job can match (no configured process among
            `process_ids`).
        """
        processes = [p for p in process_ids or self._processes if p in self._processes]
        wanted = [process_tag(p) for p in processes]
        if not process_ids:
            wanted.append(ADDED_JOB_TAG)  # (a job `add_job` recorded, of any process)
        if not wanted:
            return None
        return FlowRunFilterTags(all_=[JOB_TAG, server_tag(self._server_label)], any_=wanted)

    def _is_job(self, flow_run: FlowRun) -> bool:
        """Whether a flow run is a job of this server (what `job_tags` selects)."""
        return (
            JOB_TAG in flow_run.tags
            and server_tag(self._server_label) in flow_run.tags
            and (process_id_of(flow_run) in self._processes or ADDED_JOB_TAG in flow_run.tags)
        )

    def flow_run(self, job_id: str) -> FlowRun:
        """Read the flow run of one of this server's jobs.

        Args:
            job_id: The job id: a flow run id, or the identifier `add_job` was given.

        Returns:
            The flow run.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        run_id = parse_job_id(job_id)
        if run_id is None:
            raise JobNotFoundError(f"{job_id!r} is not a job id")
        try:
            flow_run = self._connection.client.read_flow_run(run_id)
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
        tags = self.job_tags()
        if tags is None:
            return []
        return self._connection.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(
                    any_=[f"{ADDED_JOB_KEY}{identifier}" for identifier in identifiers]
                ),
                tags=tags,
            ),
            limit=len(identifiers),
        )

    def records(self, flow_runs: list[FlowRun]) -> list[dict[str, Any]]:
        """The job records of flow runs (with running jobs' progress, crashed jobs' errors).

        Args:
            flow_runs: Job flow runs.

        Returns:
            pygeoapi's job record of each, in the same order.
        """
        client = self._connection.client
        running = [
            run.id
            for run in flow_runs
            if job_status(run.state_type, run.state_name) == JobStatus.running
        ]
        progress = read_progress(client, running)
        errors = last_errors(client, flow_runs)
        ui_url = self._ui_url()
        records = [
            job_record(run, progress.get(run.id), errors.get(run.id), ui_url) for run in flow_runs
        ]
        for run, record in zip(flow_runs, records, strict=True):
            key = run.idempotency_key or ""
            if key.startswith(ADDED_JOB_KEY):
                record["identifier"] = key.removeprefix(ADDED_JOB_KEY)
        return records

    def find(self, query: JobQuery) -> tuple[list[dict[str, Any]], int]:
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
        tags = self.job_tags(query.process_ids)
        if tags is None:
            return [], 0
        flow_run_filter = FlowRunFilter(tags=tags)
        if query.statuses:
            flow_run_filter.state = state_filter(query.statuses)
        if query.created_after or query.created_before:
            flow_run_filter.expected_start_time = FlowRunFilterExpectedStartTime(
                after_=query.created_after, before_=query.created_before
            )
        if query.min_duration is None and query.max_duration is None:
            # The count scans every matching flow run: it runs beside the page's query.
            counting = self._counter.submit(
                self._connection.client.count_flow_runs, flow_run_filter=flow_run_filter
            )
            flow_runs = self._read_flow_runs(flow_run_filter, query.limit, query.offset)
            return self.records(flow_runs), counting.result()
        flow_run_filter.start_time = FlowRunFilterStartTime(
            is_null_=False, before_=now - timedelta(seconds=query.min_duration or 0)
        )
        matching = [
            run
            for run in self._read_flow_runs(flow_run_filter, _DURATION_SCAN_LIMIT, 0)
            if _within(duration_of(run, now), query.min_duration, query.max_duration)
        ]
        end = None if query.limit is None else query.offset + query.limit
        return self.records(matching[query.offset : end]), len(matching)

    def _read_flow_runs(
        self, flow_run_filter: FlowRunFilter, limit: int | None, offset: int
    ) -> list[FlowRun]:
        """Read a page of job flow runs, newest first, in requests Prefect accepts."""
        wanted = limit if limit is not None else _PREFECT_PAGE
        flow_runs: list[FlowRun] = []
        while len(flow_runs) < wanted:
            chunk = self._connection.client.read_flow_runs(
                flow_run_filter=flow_run_filter,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=min(_PREFECT_PAGE, wanted - len(flow_runs)),
                offset=offset + len(flow_runs),
            )
            flow_runs += chunk
            if len(chunk) < min(_PREFECT_PAGE, wanted):
                break
        return flow_runs

    def job(self, job_id: str) -> dict[str, Any]:
        """Read one job, in a batch with whatever other reads are waiting.

        Args:
            job_id: The job id.

        Returns:
            The job record.

        Raises:
            JobNotFoundError: If there is no such job.
            PrefectUnavailableError: If the batch did not answer within the read timeout.
        """
        run_id = parse_job_id(job_id)
        if run_id is None:
            raise JobNotFoundError(f"{job_id!r} is not a job id")
        _ = self._connection.api_url  # (a cold start of the embedded API: not in the wait)
        try:
            record = self._batches.read(run_id, timeout=self._read_timeout)
        except TimeoutError as err:
            raise PrefectUnavailableError(str(err)) from err
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    def job_alone(self, job_id: str) -> dict[str, Any]:
        """Read one job on its own (`read_flow_run`), not in a batch (`PrefectManager.read_job`)."""
        return self.records([self.flow_run(job_id)])[0]

    def _read_record(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        """Read one job on its own (for the batches, when one fails)."""
        try:
            return self.job_alone(str(run_id))
        except JobNotFoundError:
            return None

    def _read_records(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Read several jobs in one query (a batch)."""
        tags = self.job_tags()
        if tags is None:
            return {}
        flow_runs = self._connection.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids), tags=tags),
            limit=len(run_ids),
        )
        missing = set(run_ids) - {run.id for run in flow_runs}
        if missing:
            flow_runs += self._read_added_runs(sorted(missing))
        return {uuid.UUID(record["identifier"]): record for record in self.records(flow_runs)}

    def result(self, job_id: str) -> tuple[str | None, Any]:
        """Read the output of a successful job (`PrefectManager.get_job_result`).

        Its argument, result and errors are those of `PrefectManager.get_job_result`.
        """
        flow_run = self.flow_run(job_id)
        status = job_status(flow_run.state_type, flow_run.state_name)
        if status != JobStatus.successful or flow_run.state is None:
            raise ResultNotAvailableError(f"Job {job_id} is {status.value}: it has no results")
        try:
            output = self._results.read(self._connection.client, flow_run.state)
        except ResultUnavailableError as err:
            # A 404, not pygeoapi's 500: a stored result that is gone, or one this server
            # refuses to read, is the job's own fault, not the server's.
            LOGGER.warning("Result of job %s: %s", job_id, err)
            raise ResultNotAvailableError(
                f"Job {job_id} has no readable result (see the server log)"
            ) from err
        return output["mimetype"], output["value"]
