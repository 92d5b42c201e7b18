"""The Prefect flow a job runs.

- A stock pygeoapi processor is wrapped on the fly in a flow named after the process
  (`build_process_flow`), or, on a worker, runs in the deployable flow
  `run_pygeoapi_process`, which loads the processor from its definition.
- A `BasePrefectProcessor` brings its own flow (`job_flow` applies the process's options).

A stock processor's flow parameters are the execute request (`inputs`, `outputs`,
`response`), so a flow run holds everything needed to run the job again. Every job's flow
persists its output with Prefect's JSON result serializer (`results.stored_output`), and a
completion hook makes the result file private.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import Flow, flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.context import FlowRunContext
from prefect.filesystems import WritableFileSystem
from pygeoapi.plugin import load_plugin
from pygeoapi.process.base import BaseProcessor

from pygeoapi_prefect._compat import ResultRecord
from pygeoapi_prefect.jobs import LABEL_MIMETYPE
from pygeoapi_prefect.process.base import BasePrefectProcessor
from pygeoapi_prefect.results import RESULT_SERIALIZER, JobOutput, make_private, stored_output
from pygeoapi_prefect.settings import ProcessSettings
from pygeoapi_prefect.subscriber import attach_hooks

__all__ = [
    "build_process_flow",
    "execute_processor",
    "job_flow",
    "job_flow_name",
    "job_parameters",
    "run_pygeoapi_process",
]

LOGGER = logging.getLogger(__name__)

DEPLOYABLE_FLOW_NAME = "pygeoapi-process"


def job_parameters(
    inputs: dict[str, Any],
    outputs: dict[str, Any] | None,
    response: str,
) -> dict[str, Any]:
    """Return the flow-run parameters of a stock processor's job: the execute request.

    Args:
        inputs: The `inputs` of the execute request.
        outputs: The `outputs` of the execute request, if any.
        response: `raw` or `document`.

    Returns:
        The parameters of the job's flow run.
    """
    return {"inputs": inputs, "outputs": outputs, "response": response}


def _record_mimetype(mimetype: str) -> None:
    if mimetype == "application/json":
        return  # what a job without the label reads as
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.client is None:
        return
    try:
        context.client.update_flow_run_labels(context.flow_run.id, {LABEL_MIMETYPE: mimetype})
    except Exception:  # the result itself carries the media type too
        LOGGER.warning("Could not label the job with its media type", exc_info=True)


def execute_processor(
    processor: BaseProcessor,
    job_id: str | None,
    inputs: dict[str, Any],
    outputs: Any,
    response: str,
) -> JobOutput:
    """Run a stock processor and shape its output the way pygeoapi's own manager does.

    Args:
        processor: The processor.
        job_id: The job id the processor is told, if known.
        inputs: The `inputs` of the execute request.
        outputs: The `outputs` of the execute request, if any.
        response: `raw` or `document`.

    Returns:
        The job's output.
    """
    if job_id is not None:
        processor.set_job_id(job_id)
    extra: dict[str, Any] = {"outputs": outputs} if processor.supports_outputs else {}
    mimetype, value = processor.execute(inputs, **extra)
    if isinstance(value, bytes) and value.isascii():
        value = value.decode("utf-8")
    if response == "document":
        value = {"outputs": [value]}
    return JobOutput(mimetype=mimetype, value=value)


def _execute(
    processor: BaseProcessor, inputs: dict[str, Any], outputs: Any, response: str
) -> dict[str, Any]:
    """Run a stock processor inside its job's flow run; return its output as stored (JSON)."""
    context = FlowRunContext.get()
    job_id = str(context.flow_run.id) if context is not None and context.flow_run else None
    output = execute_processor(processor, job_id, inputs, outputs, response)
    _record_mimetype(output["mimetype"])
    return stored_output(output)


def _private_result(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    """Make the result file a job's flow just stored readable by this user only (0600)."""
    record = state.data
    storage = flow.result_storage
    if isinstance(record, ResultRecord) and isinstance(storage, WritableFileSystem):
        make_private(storage, record.metadata.storage_key or "")


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("en", next(iter(value.values()), None))
    return str(value) if value else None


def build_process_flow(
    process_id: str,
    processor: BaseProcessor,
    settings: ProcessSettings,
    result_storage: WritableFileSystem | None,
) -> Flow[..., dict[str, Any]]:
    """Wrap a pygeoapi processor in a Prefect flow named after the process.

    Args:
        process_id: The id of the process in the pygeoapi config.
        processor: The processor, unchanged.
        settings: The process's Prefect options.
        result_storage: The storage block the job's output is persisted to (Prefect's
            default result storage when None).

    Returns:
        A flow whose runs execute the processor and persist its output as JSON
        (`results.stored_output`).
    """

    def run_process(
        inputs: dict[str, Any],
        outputs: dict[str, Any] | None = None,
        response: str = "raw",
    ) -> dict[str, Any]:
        return _execute(processor, inputs, outputs, response)

    run_process.__qualname__ = run_process.__name__ = f"run_{process_id}".replace("-", "_")
    metadata = processor.metadata or {}
    flow = Flow(
        fn=run_process,
        name=process_id,
        version=str(metadata.get("version", "0")),
        description=_text(metadata.get("description")),
        retries=settings.retries,
        retry_delay_seconds=settings.retry_delay,
        timeout_seconds=settings.timeout,
        persist_result=True,
        result_storage=result_storage,
        result_serializer=RESULT_SERIALIZER,
        validate_parameters=False,
        log_prints=True,
        on_completion=[_private_result],
    )
    return attach_hooks(flow)


@flow(
    name=DEPLOYABLE_FLOW_NAME,
    persist_result=True,
    result_serializer=RESULT_SERIALIZER,
    validate_parameters=False,
    log_prints=True,
)
def run_pygeoapi_process(
    process_id: str,
    processor: dict[str, Any],
    inputs: dict[str, Any],
    outputs: dict[str, Any] | None = None,
    response: str = "raw",
) -> dict[str, Any]:
    """Run any pygeoapi processor, loaded from its definition (the deployable flow).

    `pygeoapi-prefect deploy-process` deploys this flow for stock processors, with the
    process id and processor definition as deployment parameters.

    Args:
        process_id: The id of the process in the pygeoapi config.
        processor: The processor definition (`resources.<id>.processor`).
        inputs: The `inputs` of the execute request.
        outputs: The `outputs` of the execute request.
        response: `raw` or `document`.

    Returns:
        The job's output, as stored (`results.stored_output`).
    """
    LOGGER.info("Running process %s", process_id)
    return _execute(load_plugin("process", processor), inputs, outputs, response)


attach_hooks(run_pygeoapi_process)


def job_flow_name(process_id: str, processor: BaseProcessor) -> str:
    """Return the name of the flow a process's jobs are runs of."""
    if isinstance(processor, BasePrefectProcessor):
        return type(processor).process_flow.name
    return process_id


def job_flow(
    process_id: str,
    processor: BaseProcessor,
    settings: ProcessSettings,
    result_storage: WritableFileSystem | None,
) -> Flow[..., Any]:
    """Return the flow that runs a job of a process, with the process's options applied.

    Args:
        process_id: The id of the process in the pygeoapi config.
        processor: The processor.
        settings: The process's Prefect options.
        result_storage: Where the job's output is persisted.

    Returns:
        The flow to run.
    """
    if not isinstance(processor, BasePrefectProcessor):
        return build_process_flow(process_id, processor, settings, result_storage)
    process_flow = type(processor).process_flow
    options: dict[str, Any] = {
        "persist_result": True,
        "result_storage": result_storage,
        "result_serializer": RESULT_SERIALIZER,
        "on_completion": [*process_flow.on_completion_hooks, _private_result],
    }
    if settings.retries:
        options.update(retries=settings.retries, retry_delay_seconds=settings.retry_delay)
    if settings.timeout:
        options["timeout_seconds"] = settings.timeout
    return process_flow.with_options(**options)
