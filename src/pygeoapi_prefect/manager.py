"""The pygeoapi process manager whose jobs are Prefect flow runs: pygeoapi's adapter.

A job's life, by module:

1. `submit.Submitter.execute` validates the request and creates the job's flow run
   (tagged with the server and process ids): the job id is the flow run id. By default
   (a stock processor) a synchronous job then runs in the request's thread
   (`runtime.direct`), and an asynchronous one in a job process of its own
   (`runtime.runner`, `runtime.job_process`); a process with a deployment runs on a
   Prefect worker;
2. `progress.report_progress` and the flow run's states tell how it goes, read back by
   `reader.JobReader` (`jobs.job_record`, `status`);
3. `results.ResultStorage` keeps its output in Prefect result storage;
4. `dismiss.dismiss_or_remove` dismisses it (CANCELLED) or removes it with its results.

A job's flow run carries the tags `pygeoapi`, `pygeoapi-server:<server_id>` and
`pygeoapi-process:<id>`: the manager reads, lists and deletes only flow runs with all
three (of a configured process). Built by a process that serves pygeoapi's Flask app,
the manager gets its Prefect side ready (`PrefectManager.start`) before the app serves.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from pygeoapi.plugin import PLUGINS
from pygeoapi.process.base import BaseProcessor
from pygeoapi.process.manager.base import BaseManager
from pygeoapi.util import (
    JobStatus,
    RequestedProcessExecutionMode,
    RequestedResponse,
    Subscriber,
)
from werkzeug.serving import is_running_from_reloader

from pygeoapi_prefect.connection import PrefectConnection
from pygeoapi_prefect.dismiss import dismiss_or_remove
from pygeoapi_prefect.errors import InvalidQueryError, ProcessorImportError, prefect_api_errors
from pygeoapi_prefect.flows import job_flow_name
from pygeoapi_prefect.jobs import JobQuery, JobQueryError
from pygeoapi_prefect.reader import JobReader
from pygeoapi_prefect.results import ResultStorage
from pygeoapi_prefect.runtime.runner import EmbeddedRunner
from pygeoapi_prefect.settings import ManagerSettings, ProcessSettings, process_settings_of
from pygeoapi_prefect.submit import Execution, Submitter

__all__ = ["PrefectManager"]

LOGGER = logging.getLogger(__name__)

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
        self._recovery_started = False
        self._reader = JobReader(
            self.connection,
            self.settings.server_label,
            self.processes,
            self.results,
            lambda: self.ui_url,
            self.settings.api_read_timeout,
        )
        self._submitter = Submitter(
            self.connection,
            self.settings,
            self.processes,
            self.process_settings,
            self.get_processor,
            self.results,
            self.runner,
            self._reader,
            self._api,
        )
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
                self._submitter.result_storage(ProcessSettings())
                for process_id in embedded:
                    processor = self.get_processor(process_id)
                    self._submitter.flow_id(job_flow_name(process_id, processor))
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

    # -- the Prefect API ----------------------------------------------------------------

    @contextmanager
    def _api(self) -> Iterator[None]:
        """Prefect API errors as OGC errors; the first use starts the recovery loop."""
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
                tags = self._reader.job_tags()
                if tags is not None:
                    self.runner.recover(self._submitter.launch_again, tags)
            except Exception:
                LOGGER.warning("Could not recover the jobs of a previous server", exc_info=True)
            time.sleep(self.settings.recovery_interval)

    @property
    def ui_url(self) -> str | None:
        """The Prefect UI jobs link to: `ui_url`, or the embedded API's own UI."""
        return self.settings.ui_url or self.connection.ui_url

    # -- reading jobs (reader.py) ---------------------------------------------------------

    def find_jobs(self, query: JobQuery) -> tuple[list[dict[str, Any]], int]:
        """Find jobs by the OGC job-list filters, newest first (see `JobReader.find`).

        Args:
            query: The filters and the page.

        Returns:
            (the page of job records, how many jobs match in all).
        """
        with self._api():
            return self._reader.find(query)

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

    def get_job(self, job_id: str) -> dict[str, Any]:
        """Return one job (read in a batch with other concurrent reads).

        Args:
            job_id: The job id (a flow run id).

        Returns:
            The job record.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        with self._api():
            return self._reader.job(job_id)

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
            return self._reader.job_alone(job_id)

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
            return self._reader.result(job_id)

    # -- writing jobs (submit.py, dismiss.py) ---------------------------------------------

    def execute_process(
        self,
        process_id: str,
        data_dict: dict[str, Any],
        execution_mode: RequestedProcessExecutionMode | None = None,
        requested_outputs: dict[str, Any] | None = None,
        subscriber: Subscriber | None = None,
        requested_response: str | None = RequestedResponse.raw.value,
    ) -> Execution:
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
        return self._submitter.execute(
            process_id,
            data_dict,
            execution_mode,
            requested_outputs,
            subscriber,
            requested_response,
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
        with self._api():
            return self._submitter.record(job_metadata)

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
            return self._submitter.update(self._reader.flow_run(job_id), update_dict)

    def delete_job(self, job_id: str) -> bool:
        """Dismiss a job, or remove a finished one with its results (see `dismiss`).

        Args:
            job_id: The job id.

        Returns:
            True.

        Raises:
            JobNotFoundError: If there is no such job.
        """
        with self._api():
            dismiss_or_remove(
                self.connection.client,
                self._reader.flow_run(job_id),
                self.results,
                self.runner,
                self.settings.dismiss_wait,
            )
        return True

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
