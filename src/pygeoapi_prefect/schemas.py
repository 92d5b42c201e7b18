"""The OGC API - Processes documents this package reads and writes, and the OGC URIs.

Pydantic models, whose field names follow the JSON of the standard (Part 1, 1.0):
`jobControlOptions`, `minOccurs`, `jobID`... Models accept unknown members (the standard
allows extensions) and serialise by alias. Every document this package answers with (a
job's status info, a job list, an exception) is rendered here, by `to_json_dict`.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CONFORMANCE_CLASSES",
    "EXCEPTION_TYPES",
    "REL_LOG",
    "REL_RESULTS",
    "ExceptionDocument",
    "ExecuteRequest",
    "InputDescription",
    "JobControlOption",
    "JobList",
    "Link",
    "OutputDescription",
    "ProcessDescription",
    "StatusCode",
    "StatusInfo",
    "Subscriber",
    "TransmissionMode",
]

_CONFORMANCE = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
_EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
_REL = "http://www.opengis.net/def/rel/ogc/1.0/"

REL_LOG = f"{_REL}log"
"""The link relation of a job's logs."""

REL_RESULTS = f"{_REL}results"
"""The link relation of a job's results (and of one output by reference)."""

CONFORMANCE_CLASSES = [f"{_CONFORMANCE}{name}" for name in ("job-list", "dismiss", "callback")]
"""The conformance classes full conformance mode adds to those pygeoapi declares."""

EXCEPTION_TYPES = {
    code: f"{_EXCEPTIONS}{name}"
    for code, name in (
        ("NoSuchProcess", "no-such-process"),
        ("NoSuchJob", "no-such-job"),
        ("ResultNotReady", "result-not-ready"),
        ("ResultNotAvailable", "result-not-available"),
        ("InvalidQueryParameterValue", "invalid-query-parameter-value"),
        ("NoSuchOutput", "no-such-output"),
    )
}
"""pygeoapi's short exception codes and the OGC exception type URIs full mode answers with."""


class _Document(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json_dict(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """Return the document as JSON-ready data, by alias.

        Args:
            exclude_unset: Leave out only the members not given, so that a None given is
                a JSON null; by default every member that is None is left out.

        Returns:
            The document's members, in the order of the model's fields.
        """
        if exclude_unset:
            return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """Return the document as the JSON text of a response body (`to_json_dict`)."""
        return json.dumps(self.to_json_dict())


class JobControlOption(StrEnum):
    """How a process can be executed and controlled."""

    SYNC_EXECUTE = "sync-execute"
    ASYNC_EXECUTE = "async-execute"
    DISMISS = "dismiss"


class TransmissionMode(StrEnum):
    """How an output is returned: inline or by reference."""

    VALUE = "value"
    REFERENCE = "reference"


class StatusCode(StrEnum):
    """The status of a job."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"


class Link(_Document):
    """A web link."""

    href: str = Field(description="The link target.")
    rel: str | None = Field(default=None, description="The relation type.")
    type: str | None = Field(default=None, description="The media type of the target.")
    title: str | None = Field(default=None, description="A human-readable title.")
    hreflang: str | None = Field(default=None, description="The language of the target.")


class InputDescription(_Document):
    """The description of one process input."""

    title: str | None = Field(default=None, description="Short title of the input.")
    description: str | None = Field(default=None, description="What the input is for.")
    keywords: list[str] = Field(default_factory=list, description="Keywords of the input.")
    schema_: dict[str, Any] = Field(
        alias="schema",
        description="JSON Schema of one value of the input.",
        examples=[{"type": "string"}],
    )
    min_occurs: int = Field(
        default=1, alias="minOccurs", ge=0, description="Least number of values (0: optional)."
    )
    max_occurs: int | Literal["unbounded"] = Field(
        default=1, alias="maxOccurs", description="Most number of values."
    )


class OutputDescription(_Document):
    """The description of one process output."""

    title: str | None = Field(default=None, description="Short title of the output.")
    description: str | None = Field(default=None, description="What the output holds.")
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the output.")


class ProcessDescription(_Document):
    """An OGC process description: what a process takes and returns.

    Examples:
        ```python
        ProcessDescription(
            id="buffer",
            version="1.0.0",
            title="Buffer",
            inputs={"distance": InputDescription(schema_={"type": "number"})},
            outputs={"result": OutputDescription(schema_={"type": "object"})},
        )
        ```
    """

    id: str = Field(description="The process id, as in the pygeoapi config.")
    version: str = Field(description="The version of the process.")
    title: str | None = Field(default=None, description="Short title of the process.")
    description: str | None = Field(default=None, description="What the process does.")
    keywords: list[str] = Field(default_factory=list, description="Keywords of the process.")
    job_control_options: list[JobControlOption] = Field(
        default_factory=lambda: [JobControlOption.SYNC_EXECUTE, JobControlOption.ASYNC_EXECUTE],
        alias="jobControlOptions",
        description="How the process can be executed.",
    )
    output_transmission: list[TransmissionMode] = Field(
        default_factory=lambda: [TransmissionMode.VALUE],
        alias="outputTransmission",
        description="How outputs can be returned.",
    )
    inputs: dict[str, InputDescription] = Field(
        default_factory=dict, description="The inputs, by input id."
    )
    outputs: dict[str, OutputDescription] = Field(
        default_factory=dict, description="The outputs, by output id."
    )
    links: list[Link] = Field(default_factory=list, description="Links about the process.")
    example: dict[str, Any] | None = Field(
        default=None, description="An example execute request (pygeoapi shows it)."
    )

    def to_metadata(self) -> dict[str, Any]:
        """Return the description as the `metadata` mapping pygeoapi processors carry."""
        return self.to_json_dict()


class Subscriber(_Document):
    """Callback URLs a client gives to be told about a job."""

    success_uri: str | None = Field(
        default=None, alias="successUri", description="Receives the results on success."
    )
    in_progress_uri: str | None = Field(
        default=None, alias="inProgressUri", description="Told when the job starts."
    )
    failed_uri: str | None = Field(
        default=None, alias="failedUri", description="Told when the job fails."
    )


class ExecuteRequest(_Document):
    """The body of `POST /processes/{id}/execution`."""

    inputs: dict[str, Any] = Field(default_factory=dict, description="Input values by input id.")
    outputs: dict[str, Any] | None = Field(
        default=None, description="The outputs wanted, with their transmission mode."
    )
    response: Literal["raw", "document"] = Field(
        default="raw", description="Raw outputs, or a results document."
    )
    subscriber: Subscriber | None = Field(default=None, description="Callback URLs.")


class StatusInfo(_Document):
    """The status of a job (`GET /jobs/{jobID}`, and the body of a job's callbacks).

    Times are RFC 3339 text, as the job records pygeoapi reads hold them.
    """

    job_id: str = Field(alias="jobID", description="The job id.")
    process_id: str | None = Field(default=None, alias="processID", description="Its process.")
    type: Literal["process"] = Field(description="Always `process`.")
    status: StatusCode = Field(description="The job's status.")
    message: str | None = Field(default=None, description="What the job is doing, or why not.")
    progress: int | None = Field(default=None, ge=0, le=100, description="Percent done.")
    created: str | None = Field(default=None, description="When the job was created.")
    started: str | None = Field(default=None, description="When it started running.")
    finished: str | None = Field(default=None, description="When it finished.")
    updated: str | None = Field(default=None, description="When its status last changed.")
    links: list[Link] = Field(default_factory=list, description="Links about the job.")


class JobList(_Document):
    """The body of `GET /jobs`."""

    jobs: list[StatusInfo] = Field(description="The jobs of this page.")
    links: list[Link] = Field(default_factory=list, description="self, next, prev links.")
    number_matched: int | None = Field(
        default=None, alias="numberMatched", description="How many jobs match in all."
    )
    number_returned: int | None = Field(
        default=None, alias="numberReturned", description="How many jobs this page holds."
    )


class ExceptionDocument(_Document):
    """An OGC exception: RFC 7807 problem details, with pygeoapi's `code` and `description`."""

    type: str = Field(description="The exception type URI, or pygeoapi's short code.")
    code: str | None = Field(default=None, description="pygeoapi's short exception code.")
    title: str | None = Field(default=None, description="Short summary.")
    status: int | None = Field(default=None, description="The HTTP status code.")
    description: str | None = Field(
        default=None, description="What went wrong (the member pygeoapi sends)."
    )
    detail: str | None = Field(default=None, description="What went wrong (RFC 7807's member).")
