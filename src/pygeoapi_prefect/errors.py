"""Errors the manager raises, shaped so that pygeoapi answers with an OGC exception.

pygeoapi's API layer turns a `ProcessorExecuteError` raised while executing into an OGC
exception document with the error's `http_status_code`; on its other job routes it does
not catch manager errors. The errors here are therefore also werkzeug HTTP exceptions,
which Flask (pygeoapi's default server) renders through `get_response` as the same JSON
document, instead of a bare 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import httpx
from prefect.exceptions import PrefectHTTPStatusError
from pygeoapi.process.base import ProcessorExecuteError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

__all__ = [
    "DeploymentNotFoundError",
    "InvalidInputError",
    "JobStillRunningError",
    "OGCHTTPError",
    "PrefectUnavailableError",
    "ResultNotAvailableError",
    "prefect_api_errors",
]


class OGCHTTPError(ProcessorExecuteError, HTTPException):  # type: ignore[misc]
    """An error that answers as an OGC exception document with its own HTTP status."""

    http_status_code = HTTPStatus.INTERNAL_SERVER_ERROR
    ogc_exception_code = "NoApplicableCode"
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str) -> None:
        ProcessorExecuteError.__init__(self, message, user_msg=message)
        self.code = int(self.http_status_code)
        self.description = message
        self.response = None

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        """Return the JSON response Flask sends for this error."""
        body = {
            "type": self.ogc_exception_code,
            "code": self.ogc_exception_code,
            "status": int(self.http_status_code),
            "description": self.description,
        }
        return Response(
            json.dumps(body),
            status=int(self.http_status_code),
            headers=list(self.headers),
            mimetype="application/json",
        )


class PrefectUnavailableError(OGCHTTPError):
    """The Prefect API cannot be reached: 503 with a message that says so."""

    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE
    ogc_exception_code = "ServiceUnavailable"
    headers = (("Retry-After", "5"),)

    def __init__(self, detail: str) -> None:
        super().__init__(f"The Prefect API is unreachable: {detail}")


class ResultNotAvailableError(OGCHTTPError):
    """A job that did not succeed has no results (dismissed jobs, for one)."""

    http_status_code = HTTPStatus.NOT_FOUND
    ogc_exception_code = "ResultNotAvailable"


class DeploymentNotFoundError(OGCHTTPError):
    """A process is configured to run on a Prefect deployment that does not exist."""

    http_status_code = HTTPStatus.SERVICE_UNAVAILABLE
    ogc_exception_code = "DeploymentNotFound"


class InvalidInputError(OGCHTTPError):
    """An execute request whose inputs do not fit the process description."""

    http_status_code = HTTPStatus.BAD_REQUEST
    ogc_exception_code = "InvalidParameterValue"


class JobStillRunningError(OGCHTTPError):
    """A synchronous execution outlasted `sync_timeout`; the job goes on."""

    http_status_code = HTTPStatus.GATEWAY_TIMEOUT
    ogc_exception_code = "JobStillRunning"


@contextmanager
def prefect_api_errors() -> Iterator[None]:
    """Turn failures to reach the Prefect API into `PrefectUnavailableError`."""
    try:
        yield
    except httpx.TransportError as err:
        raise PrefectUnavailableError(f"{type(err).__name__}: {err}") from err
    except PrefectHTTPStatusError as err:
        if err.response.status_code >= 500:
            raise PrefectUnavailableError(f"HTTP {err.response.status_code}") from err
        raise
