"""`BasePrefectProcessor`: publish a Prefect flow as an OGC process.

An author subclasses it with two class attributes, a process description and a flow:

```python
from prefect import flow

from pygeoapi_prefect.process import BasePrefectProcessor
from pygeoapi_prefect.schemas import ExecuteRequest, ProcessDescription
from pygeoapi_prefect.subscriber import attach_hooks


@flow
def double(job_id: str, execute_request: ExecuteRequest, process_description: ProcessDescription):
    return {"result": 2 * execute_request.inputs["x"]}


class DoubleProcessor(BasePrefectProcessor):
    process_description = ProcessDescription(id="double", version="1.0", ...)
    process_flow = double
```

The flow receives the job id, the validated execute request and the process
description, and returns the outputs (a JSON-serialisable mapping by output id, or a
`JobOutput` with a media type; binary as `results.stored_output` makes it). The manager
persists it with Prefect's JSON result serializer. Inside it, tasks, retries, caching,
`get_run_logger()` and `report_progress()` work as in any Prefect flow. Without a
deployment the manager runs it like any process; with `processor.prefect.deployment` set,
a Prefect worker does.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from prefect import Flow
from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

from pygeoapi_prefect.results import as_job_output
from pygeoapi_prefect.schemas import ExecuteRequest, ProcessDescription
from pygeoapi_prefect.subscriber import attach_hooks
from pygeoapi_prefect.validation import InputValidationError, validate_inputs

__all__ = ["BasePrefectProcessor", "flow_parameters"]


def flow_parameters(
    job_id: str | None,
    execute_request: ExecuteRequest,
    process_description: ProcessDescription,
) -> dict[str, Any]:
    """Return the parameters a process flow is called with.

    Args:
        job_id: The job id (the flow run id), when known.
        execute_request: The validated execute request.
        process_description: The process description.

    Returns:
        The flow-run parameters.
    """
    return {
        "job_id": job_id,
        "execute_request": execute_request.to_json_dict(),
        "process_description": process_description.to_json_dict(),
    }


class BasePrefectProcessor(BaseProcessor):  # type: ignore[misc]
    """A pygeoapi processor whose work is a Prefect flow.

    Subclasses set `process_description` and `process_flow`.

    Args:
        processor_def: The processor definition from the pygeoapi config.
    """

    process_description: ClassVar[ProcessDescription]
    process_flow: ClassVar[Flow[..., Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        flow = cls.__dict__.get("process_flow")
        if isinstance(flow, Flow):
            # In place: a worker that imports the flow's module gets the hooks too.
            attach_hooks(flow)

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, self.process_description.to_metadata())

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        """Run the flow in this process (for pygeoapi managers other than Prefect's).

        Args:
            data: The `inputs` of the request.
            outputs: The `outputs` of the request.

        Returns:
            (media type, outputs).

        Raises:
            ProcessorExecuteError: When an input is invalid (it names the input).
        """
        try:
            validate_inputs(self.metadata, data)
        except InputValidationError as err:
            raise ProcessorExecuteError(str(err), user_msg=str(err)) from err
        request = ExecuteRequest(inputs=data, outputs=outputs)
        value = type(self).process_flow(
            **flow_parameters(str(uuid.uuid4()), request, self.process_description)
        )
        output = as_job_output(value)
        return output["mimetype"], output["value"]
