"""Where a job starts: an execute request becomes a flow run, and is handed to what runs it.

`Submitter.execute` validates the request (bounds, inputs, outputs, callbacks), then, by
default (a stock processor, no deployment):

- synchronous: creates the flow run RUNNING and runs the processor in the request's thread
  (`runtime.direct`), its output persisted as a Prefect result;
- asynchronous: creates the flow run SCHEDULED and hands it to the embedded runner
  (`runtime.runner`), which runs it in a job process of its own.

A process with a deployment gets a flow run of its deployment, which a Prefect worker runs;
a `BasePrefectProcessor`, or a process with retries, a timeout or a subscriber, runs
through Prefect's flow engine. With `dedup`, an identical earlier job answers instead
(`dedup`). `record` and `update` serve pygeoapi's `add_job` and `update_job`: jobs a caller
records by hand.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.actions import DeploymentFlowRunCreate, FlowRunCreate
from prefect.client.schemas.objects import FlowRun, FlowRunPolicy, State, StateType
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import WritableFileSystem
from prefect.settings import get_current_settings
from prefect.states import Pending, Running, Scheduled, to_state_create
from prefect.utilities.names import generate_slug
from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError
from pygeoapi.util import (
    JobStatus,
    ProcessExecutionMode,
    RequestedProcessExecutionMode,
    RequestedResponse,
    Subscriber,
)

from pygeoapi_prefect.callbacks import CallbackURLError
from pygeoapi_prefect.connection import PrefectConnection
from pygeoapi_prefect.dedup import (
    DEDUP_HEADER,
    counts,
    created_here,
    creation_context,
    dedup_key,
    next_key,
)
from pygeoapi_prefect.dismiss import await_final
from pygeoapi_prefect.errors import (
    DeploymentNotFoundError,
    InvalidInputError,
    JobStillRunningError,
    PayloadTooLargeError,
)
from pygeoapi_prefect.flows import job_flow_name, job_parameters
from pygeoapi_prefect.jobs import (
    ADDED_JOB_KEY,
    ADDED_JOB_TAG,
    JOB_TAG,
    LABEL_MIMETYPE,
    parse_job_id,
    process_id_of,
    process_tag,
    server_tag,
)
from pygeoapi_prefect.process.base import BasePrefectProcessor, flow_parameters
from pygeoapi_prefect.reader import JobReader
from pygeoapi_prefect.results import (
    JobOutput,
    ResultStorage,
    ResultUnavailableError,
    persist_output,
)
from pygeoapi_prefect.runtime.direct import run_direct
from pygeoapi_prefect.runtime.runner import LABEL_RUNNER, EmbeddedRunner, JobLaunch, runner_id
from pygeoapi_prefect.schemas import ExceptionDocument, ExecuteRequest
from pygeoapi_prefect.settings import ManagerSettings, ProcessSettings
from pygeoapi_prefect.status import job_status, new_state
from pygeoapi_prefect.subscriber import LABEL_SUBSCRIBER, subscriber_document, subscriber_labels
from pygeoapi_prefect.validation import (
    MAX_DEPTH,
    InputValidationError,
    RequestTooLargeError,
    validate_bounds,
    validate_inputs,
    validate_outputs,
)

__all__ = ["Execution", "Submitter", "prefect_parameter_limit"]

LOGGER = logging.getLogger(__name__)

Execution = tuple[str, str | None, Any, JobStatus, dict[str, str] | None]
"""What pygeoapi's `execute_process` returns: (job id, media type, outputs, status, headers)."""


def prefect_parameter_limit() -> int | None:
    """The largest flow-run parameters the Prefect API accepts, in bytes of compact JSON.

    Prefect's `server.api.max_parameter_size` (`PREFECT_SERVER_API_MAX_PARAMETER_SIZE`,
    512 KiB by default), as this process's Prefect settings give it; None when it is 0
    (no limit).
    """
    limit = get_current_settings().server.api.max_parameter_size
    return limit or None


class Submitter:
    """Creates jobs' flow runs and starts them where they run.

    Args:
        connection: The Prefect API connection.
        settings: The manager's settings.
        processes: pygeoapi's configured processes, by id.
        process_settings: The Prefect options of a process, by id.
        get_processor: The processor of a process, by id.
        results: Where the jobs' outputs are stored.
        runner: The embedded runner (jobs of processes without a deployment).
        reader: The job reader (a sync job's failure message).
        api: The manager's Prefect API error handling, entered around each API call.
    """

    def __init__(
        self,
        connection: PrefectConnection,
        settings: ManagerSettings,
        processes: Mapping[str, Any],
        process_settings: Callable[[str], ProcessSettings],
        get_processor: Callable[[str], BaseProcessor],
        results: ResultStorage,
        runner: EmbeddedRunner,
        reader: JobReader,
        api: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._processes = processes
        self._process_settings = process_settings
        self._get_processor = get_processor
        self._results = results
        self._runner = runner
        self._reader = reader
        self._api = api
        self._flow_ids: dict[str, uuid.UUID] = {}
        self._deployment_ids: dict[str, uuid.UUID] = {}

    # -- what the start-up and the recovery use ---------------------------------------------

    def result_storage(self, settings: ProcessSettings) -> WritableFileSystem:
        """The storage block a job of a process persists its output to.

        Args:
            settings: The process's options.

        Returns:
            The block (saved in the Prefect API at first use).
        """
        return self._results.block_for(self._connection.api_url, settings.result_storage)

    def flow_id(self, flow_name: str) -> uuid.UUID:
        """The id of the Prefect flow of this name (created at first use, then cached).

        Args:
            flow_name: The flow's name.

        Returns:
            The flow's id.
        """
        flow_id = self._flow_ids.get(flow_name)
        if flow_id is None:
            flow_id = self._connection.client.create_flow_from_name(flow_name)
            self._flow_ids[flow_name] = flow_id
        return flow_id

    def launch_again(self, flow_run: FlowRun) -> JobLaunch | None:
        """How to start a job that a stopped server left behind (for `recover`).

        Args:
            flow_run: The job's flow run.

        Returns:
            Its launch; None when its process is not configured here.
        """
        process_id = process_id_of(flow_run)
        if process_id is None or process_id not in self._processes:
            return None
        settings = self._process_settings(process_id)
        subscribed = LABEL_SUBSCRIBER in (flow_run.labels or {})
        return self._launch(flow_run, process_id, settings, subscribed)

    def _launch(
        self, flow_run: FlowRun, process_id: str, settings: ProcessSettings, subscribed: bool
    ) -> JobLaunch:
        return JobLaunch(
            flow_run=flow_run,
            process_id=process_id,
            processor_def=self._processes[process_id]["processor"],
            settings=settings,
            result_storage=self.result_storage(settings),
            direct=self._runs_direct(self._get_processor(process_id), settings, subscribed),
        )

    # -- execution --------------------------------------------------------------------------

    def execute(
        self,
        process_id: str,
        data_dict: dict[str, Any],
        execution_mode: RequestedProcessExecutionMode | None = None,
        requested_outputs: dict[str, Any] | None = None,
        subscriber: Subscriber | None = None,
        requested_response: str | None = RequestedResponse.raw.value,
    ) -> Execution:
        """Run a process as a Prefect flow run: what `PrefectManager.execute_process` does.

        Its arguments, result and errors are those of `PrefectManager.execute_process`.
        """
        processor = self._get_processor(process_id)
        run_async, headers = _is_async(processor, execution_mode)
        response = requested_response or RequestedResponse.raw.value
        settings = self._process_settings(process_id)
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
            labels = subscriber_labels(subscriber, self._settings.callback_allow)
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
                    self._runner.start(self._launch(flow_run, process_id, settings, bool(labels)))
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

    def _runs_direct(
        self, processor: BaseProcessor, settings: ProcessSettings, subscribed: bool
    ) -> bool:
        """Whether a job runs without Prefect's flow engine (see `runtime.direct`)."""
        return (
            self._settings.direct_execution
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
    ) -> Execution:
        with self._api():
            result_storage = self.result_storage(settings)
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
                self._connection.client, flow_run, processor, parameters, result_storage
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
        return job_id, *_failure(outcome.message or "Job failed"), headers

    def _sync_outcome(self, run_id: uuid.UUID) -> tuple[str | None, Any, JobStatus]:
        timeout = self._settings.sync_timeout
        if self._runner.owns(run_id):
            finished = self._runner.wait(run_id, timeout)
        else:
            with self._api():
                finished = await_final(self._connection.client, run_id, timeout)
        if not finished:
            raise JobStillRunningError(
                f"Job {run_id} is still running after {timeout:g} s; "
                f"it goes on: poll /jobs/{run_id} for its status"
            )
        with self._api():
            flow_run = self._connection.client.read_flow_run(run_id)
            status = job_status(flow_run.state_type, flow_run.state_name)
            if status == JobStatus.successful and flow_run.state is not None:
                try:
                    output = self._results.read(self._connection.client, flow_run.state)
                except ResultUnavailableError as err:
                    raise ProcessorExecuteError(user_msg=f"Job {run_id}: {err}") from err
                return output["mimetype"], output["value"], status
            message = self._reader.records([flow_run])[0]["message"]
        return _failure(message)

    # -- flow runs --------------------------------------------------------------------------

    def _tags(self, process_id: str, settings: ProcessSettings) -> list[str]:
        return [
            JOB_TAG,
            server_tag(self._settings.server_label),
            process_tag(process_id),
            *self._settings.tags,
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
        client = self._connection.client
        _check_parameters(parameters)
        context = creation_context()
        body = FlowRunCreate(
            idempotency_key=idempotency_key,
            context=context if idempotency_key else {},
            labels=labels or {},
            flow_id=self.flow_id(flow_name),
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
        if not self._process_settings(process_id).dedup:
            return None
        return dedup_key(
            self._settings.server_label,
            process_id,
            processor.metadata.get("version"),
            inputs,
            requested_outputs,
            response,
        )

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
        client = self._connection.client
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
        self._connection.client.update_flow_run(
            flow_run.id, parameters=parameters, empirical_policy=policy
        )
        flow_run.parameters = parameters
        return flow_run

    # -- jobs a caller records (pygeoapi's add_job, update_job) -----------------------------

    def record(self, job_metadata: dict[str, Any]) -> str:
        """Record a job a caller gives, without running it (see `PrefectManager.add_job`).

        Args:
            job_metadata: pygeoapi's job record.

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
        state = self._given_state(
            status, job_metadata.get("message"), job_metadata.get("location"), mimetype
        )
        flow_run, _ = self._create_flow_run(
            process_id,
            process_id,
            job_parameters({}, None, "raw"),
            ProcessSettings(tags=[ADDED_JOB_TAG]),
            {LABEL_MIMETYPE: str(mimetype)} if mimetype else None,
            idempotency_key=None if alias is None else f"{ADDED_JOB_KEY}{alias}",
        )
        if state.type != StateType.SCHEDULED:
            # (Prefect's API cannot create a flow run in a state that carries a result)
            self._connection.client.set_flow_run_state(flow_run.id, state, force=True)
        return str(alias or flow_run.id)

    def update(self, flow_run: FlowRun, update_dict: dict[str, Any]) -> bool:
        """Update a job's status, message, media type and output (`update_job`).

        Args:
            flow_run: The job's flow run.
            update_dict: pygeoapi's job fields to change.

        Returns:
            True when the job was updated.
        """
        client = self._connection.client
        mimetype = update_dict.get("mimetype")
        if mimetype:
            client.update_flow_run_labels(flow_run.id, {LABEL_MIMETYPE: str(mimetype)})
        new_status = update_dict.get("status")
        if new_status is None:
            return True
        state = self._given_state(
            JobStatus(new_status),
            update_dict.get("message"),
            update_dict.get("location"),
            mimetype or (flow_run.labels or {}).get(LABEL_MIMETYPE),
        )
        result: OrchestrationResult[Any] = client.set_flow_run_state(flow_run.id, state, force=True)
        return result.state is not None

    def _given_state(self, status: JobStatus, message: Any, location: Any, mimetype: Any) -> State:
        """The flow-run state of a job a caller records (`record`, `update`)."""
        text = None if message is None else str(message)
        output = _read_location(location, mimetype) if status == JobStatus.successful else None
        if output is None:
            return new_state(status, text)
        record = persist_output(self.result_storage(ProcessSettings()), output)
        return new_state(status, text, record)


def _is_async(
    processor: BaseProcessor, execution_mode: RequestedProcessExecutionMode | None
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
