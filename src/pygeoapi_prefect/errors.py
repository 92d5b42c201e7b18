"""Errors the manager raises, shaped so that pygeoapi answers with an OGC exception.

pygeoapi's API layer turns a `ProcessorExecuteError` raised while executing into an OGC
exception document with the error's `http_status_code`; on its other job routes it does
not catch manager errors. The errors here are therefore werkzeug HTTP exceptions, which
Flask (pygeoapi's default server) renders through `get_response` as the same JSON
document, instead of a bare 500. Every 503 carries `Retry-After`: as pygeoapi's execute
handler answers with its own headers, a 503 is not a `ProcessorExecuteError`, and Flask
renders it on execute too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import httpx
from prefect.exceptions import PrefectHTTPStatusError
from pygeoapi.process.base import ProcessorExecuteError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from pygeoapi_prefect.schemas import ExceptionDocument

LOGGER = logging.getLogger(__name__)

_MAX_DETAIL = 200

__all__ = [
    "DeploymentNotFoundError",
    "InvalidInputError",
    "InvalidQueryError",
    "JobStillRunningError",
    "OGCExecuteError",
    "OGCHTTPError",
    "PayloadTooLargeError",
    "PrefectAPIURLError",
    "PrefectRefusedError",
    "PrefectUnavailableError",
    "ProcessorImportError",
    "ResultNotAvailableError",
    "prefect_api_errors",
    "processor_import_message",
]


class OGCHTTPError(HTTPException):
    """An error that answers as an OGC exception document with its own HTTP status."""

    http_status_code = HTTPStatus.INTERNAL_SERVER_ERROR
    ogc_exception_code = "NoApplicableCode"
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str) -> None:
        HTTPException.__init__(self, message)
        self.code = int(self.http_status_code)

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        """Return the JSON response Flask sends for this error."""
        document = ExceptionDocument(
            type=self.ogc_exception_code,
            code=self.ogc_exception_code,
            status=int(self.http_status_code),
            description=self.description,
        )
        headers = dict(self.headers)
        if self.http_status_code == HTTPStatus.SERVICE_UNAVAILABLE:
            headers.setdefault("Retry-After", "5")
        return Response(
            document.to_json(),
            status=int(self.http_status_code),
            headers=list(headers.items()),
            mimetype="application/json",
        )


class OGCExecuteError(ProcessorExecuteError, OGCHTTPError):  # type: ignore[misc]
    """An `OGCHTTPError` that pygeoapi's execute handler answers (status and message)."""

    def __init__(self, message: str) -> None:
        # (pygeoapi's error passes `message` on to `OGCHTTPError.__init__`, next in line)
        ProcessorExecuteError.__init__(self, message, user_msg=message)


class PrefectUnavailableError(OGCHTTPError):
    """The Prefect API cannot be reached: 503 with a message that says so."""

    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE
    ogc_exception_code = "ServiceUnavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(f"The Prefect API is unreachable: {detail}")


class PrefectAPIURLError(PrefectUnavailableError):
    """The configured Prefect API URL is not one (it lacks `/api`, say): 503 saying so."""

    def __init__(self, message: str) -> None:
        OGCHTTPError.__init__(self, message)


class ResultNotAvailableError(OGCExecuteError):
    """A job that did not succeed has no results (dismissed jobs, for one)."""

    http_status_code = HTTPStatus.NOT_FOUND
    ogc_exception_code = "ResultNotAvailable"


class DeploymentNotFoundError(OGCHTTPError):
    """A process is configured to run on a Prefect deployment that does not exist."""

    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE
    ogc_exception_code = "DeploymentNotFound"


class InvalidInputError(OGCExecuteError):
    """An execute request whose inputs do not fit the process description."""

    http_status_code = HTTPStatus.BAD_REQUEST
    ogc_exception_code = "InvalidParameterValue"


class InvalidQueryError(OGCHTTPError):
    """A job-list query parameter whose value is out of range (the message names it)."""

    http_status_code = HTTPStatus.BAD_REQUEST
    ogc_exception_code = "InvalidQueryParameterValue"


class PayloadTooLargeError(OGCExecuteError):
    """An execute request whose job parameters are larger than the Prefect API accepts."""

    http_status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    ogc_exception_code = "PayloadTooLarge"


class PrefectRefusedError(OGCExecuteError):
    """The Prefect API refused what a request asked of it (a 4xx of the Prefect API)."""

    http_status_code = HTTPStatus.BAD_REQUEST
    ogc_exception_code = "InvalidParameterValue"


class JobStillRunningError(OGCExecuteError):
    """A synchronous execution outlasted `sync_timeout`; the job goes on."""

    http_status_code = HTTPStatus.GATEWAY_TIMEOUT
    ogc_exception_code = "JobStillRunning"


def processor_import_message(process_id: str, name: str, error: BaseException) -> str:
    """Say which processor does not import, why, and how to make it importable.

    Args:
        process_id: The process whose processor it is.
        name: The processor's `name` in the config (`package.module.Class`).
        error: The import failure.

    Returns:
        The message.
    """
    module, _, class_name = name.rpartition(".")
    top = module.partition(".")[0] or name
    return (
        f"process {process_id!r}: cannot import its processor class {class_name!r} from "
        f"module {module!r} ({type(error).__name__}: {error}). Make {module!r} importable "
        f"where this runs: install the package that provides it (`pip install ...`), or add "
        f"the directory that holds {top!r} to PYTHONPATH."
    )


class ProcessorImportError(RuntimeError):
    """A configured processor does not import: a configuration error, raised at start.

    Args:
        process_id: The process whose processor it is.
        name: The processor's `name` in the config.
        error: The import failure.
    """

    def __init__(self, process_id: str, name: str, error: BaseException) -> None:
        super().__init__(processor_import_message(process_id, name, error))


@contextmanager
def prefect_api_errors() -> Iterator[None]:
    """Turn failures of the Prefect API into OGC errors with short messages.

    Unreachable, failing (5xx) or refusing our credentials (401, 403): 503. Refusing the
    request itself (another 4xx, e.g. 422 for parameters that are too large): 400 with
    Prefect's reason, cut short. The Prefect error, whose message holds the whole
    response (which repeats the whole request), is neither chained nor logged.
    """
    try:
        yield
    except httpx.TransportError as err:
        raise PrefectUnavailableError(f"{type(err).__name__}: {err}") from err
    except PrefectHTTPStatusError as err:
        status = err.response.status_code
        if status >= 500 or status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise PrefectUnavailableError(f"HTTP {status}") from None
        reason = _reason(err.response)
        LOGGER.warning("The Prefect API refused a request: HTTP %d %s", status, reason)
        raise PrefectRefusedError(
            f"The Prefect API refused the request (HTTP {status}): {reason}"
        ) from None


def _reason(response: httpx.Response) -> str:
    """The first reason a Prefect API error response gives, cut short."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase[:_MAX_DETAIL]
    reason: Any = None
    if isinstance(body, dict):
        details = body.get("exception_detail")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            reason = details[0].get("msg")
        reason = reason or body.get("exception_message") or body.get("detail")
    text = str(reason) if reason else response.reason_phrase
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
