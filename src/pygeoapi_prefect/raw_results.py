"""Raw responses of several outputs, or of outputs by reference (full conformance mode).

OGC API - Processes 1.0 answers a `raw` response with the outputs themselves, not with a
JSON document about them. pygeoapi sends a job's output as its processor returned it,
which is right for one output by value. For the other cases this module builds:

- several outputs, or values mixed with references: a `multipart/related` body, one part
  per output, whose `Content-ID` is the output id; a part by reference has a
  `Content-Location` and an empty body;
- every output by reference: `204 No Content` with one `Link` header per output.

A reference is the URL of one output of the job, `/jobs/{jobId}/results/{outputId}`, which
full conformance mode serves (`output_body` gives its body).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from werkzeug.wrappers import Response

from pygeoapi_prefect.schemas import REL_RESULTS, TransmissionMode

__all__ = ["output_body", "raw_response", "transmission_modes", "wants_reshaping"]


def transmission_modes(requested: Any, defined: Mapping[str, Any]) -> dict[str, TransmissionMode]:
    """How each output a job returns is sent: `value` or `reference`.

    Args:
        requested: The execute request's `outputs` (None or empty: every defined output).
        defined: The process description's outputs.

    Returns:
        The transmission mode of each returned output, by output id.
    """
    if isinstance(requested, Mapping) and requested:
        return {str(name): _mode(spec) for name, spec in requested.items()}
    return {str(name): TransmissionMode.VALUE for name in defined}


def _mode(spec: Any) -> TransmissionMode:
    mode = spec.get("transmissionMode") if isinstance(spec, Mapping) else None
    return (
        TransmissionMode.REFERENCE if mode == TransmissionMode.REFERENCE else TransmissionMode.VALUE
    )


def wants_reshaping(modes: Mapping[str, TransmissionMode]) -> bool:
    """Whether a raw response is more than one output by value (pygeoapi's own answer)."""
    return len(modes) > 1 or TransmissionMode.REFERENCE in modes.values()


def output_body(value: Any, definition: Mapping[str, Any]) -> tuple[bytes, str]:
    """The body and media type of one output's value.

    Args:
        value: The output's value.
        definition: The output's description (its schema gives the media type).

    Returns:
        (body, media type).
    """
    schema = definition.get("schema")
    schema = schema if isinstance(schema, Mapping) else {}
    declared = schema.get("contentMediaType")
    if isinstance(value, bytes):
        return value, declared if isinstance(declared, str) else "application/octet-stream"
    if isinstance(value, str) and schema.get("type") == "string":
        if isinstance(declared, str) and declared != "application/json":
            return value.encode(), declared
        if declared is None:
            return value.encode(), "text/plain; charset=utf-8"
    return json.dumps(value).encode(), "application/json"


def raw_response(
    values: Mapping[str, Any],
    modes: Mapping[str, TransmissionMode],
    defined: Mapping[str, Any],
    job_url: str,
) -> Response:
    """The raw response of a job whose outputs are several, or sent by reference.

    Args:
        values: The job's outputs, by output id.
        modes: The transmission mode of each output (`transmission_modes`).
        defined: The process description's outputs.
        job_url: The job's URL (`.../jobs/{jobId}`).

    Returns:
        `204` with `Link` headers when every output is a reference, else `multipart/related`.
    """
    returned = [name for name in modes if name in values and name in defined]
    hrefs = {name: f"{job_url}/results/{quote(name, safe='')}" for name in returned}
    if all(modes[name] == TransmissionMode.REFERENCE for name in returned):
        response = Response(status=204)
        for name in returned:
            response.headers.add("Link", f'<{hrefs[name]}>; rel="{REL_RESULTS}"; title="{name}"')
        return response
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    root_type = ""
    for name in returned:
        headers = [f"Content-ID: <{name}>"]
        if modes[name] == TransmissionMode.REFERENCE:
            body, media = b"", "application/octet-stream"
            headers.append(f"Content-Location: {hrefs[name]}")
        else:
            body, media = output_body(values[name], defined.get(name) or {})
            headers.append(f"Content-Type: {media}")
        root_type = root_type or media
        parts.append(f"--{boundary}\r\n{'\r\n'.join(headers)}\r\n\r\n".encode() + body + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; boundary="{boundary}"; type="{root_type.split(";")[0]}"'
    return Response(b"".join(parts), status=200, content_type=content_type)
