"""Full conformance mode: pygeoapi's own Flask app, with the job routes answered here.

pygeoapi's API layer, not the manager, stands between some OGC API - Processes
requirements and a stock server: it passes no job-list filters to the manager, declares
neither job-list nor dismiss, answers with short exception codes, sends no failure message
for a failed job's results, sends several raw outputs (or outputs by reference) as one
JSON document, refuses a subscriber without `successUri`, and lists at most `limit`
processes with no link to the rest. `create_app` takes pygeoapi's Flask app as it is,
configured by the same config file, and replaces only the views of the job routes, of
the process list and of execution (around pygeoapi's own), and adds `/jobs/{id}/logs`
and `/jobs/{id}/results/{outputId}`; every other route stays pygeoapi's. Start it with
`pygeoapi-prefect serve`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from flask import Flask, request
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from pygeoapi.api import evaluate_limit
from pygeoapi.process.base import JobNotFoundError, JobResultNotFoundError
from pygeoapi.util import JobStatus
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

from pygeoapi_prefect._compat import flask_app_and_api, replace_request_body
from pygeoapi_prefect.errors import OGCHTTPError, PrefectUnavailableError
from pygeoapi_prefect.jobs import JobQuery, JobQueryError, parse_job_id
from pygeoapi_prefect.manager import PrefectManager
from pygeoapi_prefect.raw_results import (
    output_body,
    raw_response,
    transmission_modes,
    wants_reshaping,
)
from pygeoapi_prefect.schemas import (
    CONFORMANCE_CLASSES,
    EXCEPTION_TYPES,
    REL_LOG,
    REL_RESULTS,
    ExceptionDocument,
    JobList,
    Link,
    StatusCode,
    StatusInfo,
)
from pygeoapi_prefect.submit import prefect_parameter_limit
from pygeoapi_prefect.validation import InputValidationError, validate_bounds

__all__ = ["create_app", "results_document"]

LOGGER = logging.getLogger(__name__)

_MAX_LIMIT = 1000
_DEFAULT_LIMIT = 10
_MAX_BODY_UNLIMITED_PREFECT = 5 * 1024 * 1024
"""The body limit when neither `max_body_bytes` nor the Prefect API's parameter size is set."""
_JSON_TYPES = ("application/json",)
_TRACEBACK = "Traceback (most recent call last):"


def _problem(status: HTTPStatus, code: str, detail: str) -> Response:
    document = ExceptionDocument(
        type=EXCEPTION_TYPES.get(code, code),
        code=code,
        title=status.phrase,
        status=int(status),
        description=detail,
        detail=detail,
    )
    return Response(document.to_json(), status=int(status), mimetype="application/json")


class _BadQuery(ValueError):
    pass


def _is_json(response: Response) -> bool:
    """Whether a response is JSON (pygeoapi sets headers as a plain dict: case matters)."""
    for key, value in response.headers.items():
        if key.lower() == "content-type":
            mimetype = str(value).split(";")[0].strip().lower()
            return mimetype == "application/json" or mimetype.endswith("+json")
    return False


def _without_traceback(message: str) -> str:
    """A log message as clients see it: a traceback in it shrinks to its error line.

    The traceback (source lines and install paths) stays in Prefect's log; the client gets
    the text before it, then its last line (e.g. ``ValueError: boom``) in its place.
    """
    head, marker, rest = message.partition(_TRACEBACK)
    if not marker:
        return message
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    error = lines[-1] if lines else ""
    return "\n".join(part for part in (head.strip(), error) if part)


def results_document(value: Any, outputs: dict[str, Any]) -> dict[str, Any]:
    """Reshape a job's stored output as an OGC results document, keyed by output id.

    pygeoapi wraps a `document` response as `{"outputs": [...]}` of `{"id", "value"}`
    items; the standard's results document is `{"<output id>": <value>, ...}`.

    Args:
        value: The job's output as stored.
        outputs: The process description's outputs.

    Returns:
        The results document.
    """
    wrapped = isinstance(value, dict) and set(value) == {"outputs"}
    if wrapped and isinstance(value["outputs"], list):
        items = value["outputs"]
        value = items[0] if len(items) == 1 else items
    if isinstance(value, dict) and {"id", "value"} <= set(value) and value["id"] in outputs:
        return {str(value["id"]): value["value"]}
    if isinstance(value, list) and all(
        isinstance(item, dict) and {"id", "value"} <= set(item) for item in value
    ):
        return {str(item["id"]): item["value"] for item in value}
    if isinstance(value, dict) and value and set(value) <= set(outputs):
        return value
    first = next(iter(outputs), "result")
    return {first: value}


def _first(name: str) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise _BadQuery(f"{name} is given more than once")
    return values[0] if values else None


def _list(name: str) -> list[str]:
    return [item for value in request.args.getlist(name) for item in value.split(",") if item]


def _number(name: str) -> float | None:
    value = _first(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise _BadQuery(f"{name} must be a number of seconds, not {value[:40]!r}") from None


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _BadQuery(f"datetime {text[:60]!r} is not an RFC 3339 date-time") from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _BadQuery(f"datetime {text[:60]!r} is out of range") from None


def _interval(value: str | None) -> tuple[datetime | None, datetime | None]:
    if value is None:
        return None, None
    if "/" not in value:
        instant = _instant(value)
        return instant, instant
    start, _, end = value.partition("/")
    if "/" in end:
        raise _BadQuery(f"datetime {value!r} is not an instant or an interval")
    low = None if start in ("", "..") else _instant(start)
    high = None if end in ("", "..") else _instant(end)
    if low and high and low > high:
        raise _BadQuery(f"datetime {value!r} ends before it starts")
    return low, high


def _job_query() -> JobQuery:
    limit_text = _first("limit")
    offset_text = _first("offset")
    try:
        limit = _DEFAULT_LIMIT if limit_text is None else int(limit_text)
        offset = 0 if offset_text is None else int(offset_text)
    except ValueError:
        raise _BadQuery("limit and offset must be integers") from None
    if not limit >= 1:
        raise _BadQuery("limit must be at least 1")
    if offset < 0:
        raise _BadQuery("offset must not be negative")
    statuses = []
    for status in _list("status"):
        try:
            statuses.append(JobStatus(status))
        except ValueError:
            raise _BadQuery(
                f"status {status!r} is not one of {[s.value for s in JobStatus]}"
            ) from None
    types = _list("type")
    if any(t != "process" for t in types):
        raise _BadQuery("type must be `process`")
    low, high = _interval(_first("datetime"))
    min_duration, max_duration = _number("minDuration"), _number("maxDuration")
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise _BadQuery("minDuration is greater than maxDuration")
    try:
        return JobQuery(
            process_ids=tuple(_list("processID")),
            statuses=tuple(statuses),
            created_after=low,
            created_before=high,
            min_duration=min_duration,
            max_duration=max_duration,
            limit=min(limit, _MAX_LIMIT),
            offset=offset,
        )
    except JobQueryError as err:
        raise _BadQuery(str(err)) from None


class _JobRoutes:
    """The views of the job routes, over the manager."""

    def __init__(self, manager: PrefectManager, base_url: str, max_body: int) -> None:
        self.manager = manager
        self.base_url = base_url.rstrip("/")
        self.max_body = max_body

    def status_info(self, job: dict[str, Any]) -> StatusInfo:
        job_url = f"{self.base_url}/jobs/{job['identifier']}"
        links = [
            Link(href=job_url, rel="self", type="application/json", title="this job"),
            Link(href=job_url, rel="monitor", type="application/json", title="status"),
            Link(
                href=f"{job_url}/logs",
                rel=REL_LOG,
                type="application/json",
                title="the job's Prefect logs",
            ),
        ]
        if job["status"] == JobStatus.successful.value:
            links.append(
                Link(
                    href=f"{job_url}/results",
                    rel=REL_RESULTS,
                    type=job["mimetype"],
                    title="results",
                )
            )
        # (its flow-run page in the Prefect UI)
        links += [Link.model_validate(link) for link in job.get("links") or []]
        return StatusInfo(
            job_id=job["identifier"],
            process_id=job["process_id"],
            type=job["type"],
            status=job["status"],
            message=job["message"],
            progress=job["progress"],
            created=job["created"],
            started=job["started"],
            finished=job["finished"],
            updated=job["updated"],
            links=links,
        )

    def _json(self, body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    def jobs(self, job_id: str | None = None) -> Response:
        if job_id is None:
            return self.job_list()
        if request.method == "DELETE":
            return self.dismiss(job_id)
        try:
            return self._json(self.status_info(self.manager.get_job(job_id)).to_json_dict())
        except JobNotFoundError:
            return _problem(HTTPStatus.NOT_FOUND, "NoSuchJob", f"no job {job_id[:64]!r}")

    def job_list(self) -> Response:
        try:
            query = _job_query()
        except _BadQuery as err:
            return _problem(HTTPStatus.BAD_REQUEST, "InvalidQueryParameterValue", str(err))
        jobs, matched = self.manager.find_jobs(query)
        params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("offset", "f")]
        url = f"{self.base_url}/jobs"

        def page(offset: int) -> str:
            return f"{url}?{urlencode([*params, ('offset', str(offset))])}"

        links = [
            Link(href=page(query.offset), rel="self", type="application/json"),
            Link(href=f"{url}?f=html", rel="alternate", type="text/html"),
        ]
        limit = query.limit or _DEFAULT_LIMIT
        if query.offset + len(jobs) < matched:
            links.append(Link(href=page(query.offset + limit), rel="next", type="application/json"))
        if query.offset > 0:
            links.append(
                Link(href=page(max(0, query.offset - limit)), rel="prev", type="application/json")
            )
        body = JobList(
            jobs=[self.status_info(job) for job in jobs],
            links=links,
            number_matched=matched,
            number_returned=len(jobs),
        )
        return self._json(body.to_json_dict())

    def dismiss(self, job_id: str) -> Response:
        # Each read on its own (not batched): a job that breaks batched reads can go.
        try:
            job = self.manager.read_job(job_id)
            self.manager.delete_job(job_id)
        except JobNotFoundError:
            return _problem(HTTPStatus.NOT_FOUND, "NoSuchJob", f"no job {job_id[:64]!r}")
        if job["status"] in (JobStatus.accepted.value, JobStatus.running.value):
            with suppress(JobNotFoundError):
                job = self.manager.read_job(job_id)
        info = self.status_info(job).model_copy(
            update={
                "status": StatusCode.DISMISSED,
                "message": "Job dismissed",
                "links": [Link(href=f"{self.base_url}/jobs", rel="up", type="application/json")],
            }
        )
        return self._json(info.to_json_dict())

    def _finished_output(self, job_id: str) -> tuple[dict[str, Any], str | None, Any] | Response:
        """A successful job and its output (mimetype, value), or why there is none."""
        try:
            job = self.manager.get_job(job_id)
        except JobNotFoundError:
            return _problem(HTTPStatus.NOT_FOUND, "NoSuchJob", f"no job {job_id[:64]!r}")
        status = job["status"]
        if status in (JobStatus.accepted.value, JobStatus.running.value):
            return _problem(HTTPStatus.NOT_FOUND, "ResultNotReady", f"job is {status}")
        if status == JobStatus.dismissed.value:
            return _problem(HTTPStatus.NOT_FOUND, "ResultNotAvailable", "the job was dismissed")
        if status == JobStatus.failed.value:
            return _problem(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", job["message"])
        try:
            mimetype, output = self.manager.get_job_result(job_id)
        except JobResultNotFoundError as err:
            return _problem(HTTPStatus.INTERNAL_SERVER_ERROR, "NoApplicableCode", str(err))
        return job, mimetype, output

    def results(self, job_id: str) -> Response:
        found = self._finished_output(job_id)
        if isinstance(found, Response):
            return found
        job, mimetype, output = found
        defined = self.manager.processes_outputs(job["process_id"])
        if job.get("response") == "document":
            return self._json(results_document(output, defined))
        modes = transmission_modes(job.get("requested_outputs"), defined)
        if wants_reshaping(modes) and mimetype in (None, "application/json"):
            values = results_document(output, defined)
            return raw_response(values, modes, defined, f"{self.base_url}/jobs/{job_id}")
        if mimetype in (None, "application/json") or isinstance(output, (dict, list)):
            return self._json(output)
        return Response(output, mimetype=mimetype)

    def result(self, job_id: str, output_id: str) -> Response:
        """One output of a successful job (`/jobs/{jobId}/results/{outputId}`)."""
        found = self._finished_output(job_id)
        if isinstance(found, Response):
            return found
        job, mimetype, output = found
        defined = self.manager.processes_outputs(job["process_id"])
        if mimetype not in (None, "application/json") and not isinstance(output, (dict, list)):
            values: dict[str, Any] = {next(iter(defined), "result"): output}
        else:
            values = results_document(output, defined)
        if output_id not in values or output_id not in defined:
            return _problem(
                HTTPStatus.NOT_FOUND, "NoSuchOutput", f"the job has no output {output_id[:64]!r}"
            )
        body, media = output_body(values[output_id], defined[output_id])
        if len(values) == 1 and mimetype not in (None, "application/json"):
            media = mimetype
        return Response(body, content_type=media)

    def logs(self, job_id: str) -> Response:
        run_id = parse_job_id(job_id)
        try:
            self.manager.get_job(job_id)
        except JobNotFoundError:
            return _problem(HTTPStatus.NOT_FOUND, "NoSuchJob", f"no job {job_id[:64]!r}")
        assert run_id is not None
        logs = self.manager.connection.client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            sort=LogSort.TIMESTAMP_ASC,
            limit=200,
        )
        body = [
            {
                "timestamp": log.timestamp.isoformat(),
                "level": logging.getLevelName(log.level),
                "message": _without_traceback(log.message),
                "taskRunID": str(log.task_run_id) if log.task_run_id else None,
            }
            for log in logs
        ]
        return self._json(body)

    def check_execute(self) -> Response | None:
        """Refuse execute requests that are too big or not JSON, before pygeoapi reads them."""
        if request.content_length is not None and request.content_length > self.max_body:
            return _problem(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "PayloadTooLarge",
                f"execute requests are limited to {self.max_body} bytes",
            )
        mimetype = request.mimetype
        if mimetype and not (mimetype in _JSON_TYPES or mimetype.endswith("+json")):
            return _problem(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                f"execute requests are JSON: send Content-Type: application/json, not {mimetype}",
            )
        body = request.get_data(cache=True)
        try:
            document = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return _problem(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", "malformed JSON body")
        if not isinstance(document, dict):
            return _problem(
                HTTPStatus.BAD_REQUEST, "InvalidParameterValue", "the body must be a JSON object"
            )
        try:
            validate_bounds(document, None)  # its size: max_body, and the manager's check
        except InputValidationError as err:
            return _problem(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", str(err))
        if not isinstance(document.get("inputs", {}), dict):
            return _problem(
                HTTPStatus.BAD_REQUEST, "InvalidParameterValue", "`inputs` must be a JSON object"
            )
        if document.get("response", "raw") not in ("raw", "document"):
            return _problem(
                HTTPStatus.BAD_REQUEST,
                "InvalidParameterValue",
                "`response` must be `raw` or `document`",
            )
        return None


def _offset() -> int:
    value = _first("offset") or "0"
    if not value.isdigit():
        raise _BadQuery(f"offset must be a non-negative integer, not {value[:20]!r}")
    return int(value)


def _summary(response: Response) -> dict[str, Any]:
    """A process summary: pygeoapi's description of the process, without its details."""
    description: dict[str, Any] = json.loads(response.get_data())
    for key in ("inputs", "outputs", "example"):
        description.pop(key, None)
    return description


def _wants_html() -> bool:
    return request.args.get("f") == "html" or (
        "f" not in request.args and request.accept_mimetypes.best == "text/html"
    )


_JOB_LIST_PARAMETERS = [
    ("processID", "Only jobs of these processes (comma-separated or repeated).", "string"),
    ("status", "Only jobs with these statuses (comma-separated or repeated).", "string"),
    ("type", "Only jobs of this type (`process`).", "string"),
    ("datetime", "Only jobs created at this instant or in this interval.", "string"),
    ("minDuration", "Only jobs that have run at least this many seconds.", "number"),
    ("maxDuration", "Only jobs that have run at most this many seconds.", "number"),
    ("limit", "The most jobs in one page.", "integer"),
    ("offset", "How many matching jobs to skip.", "integer"),
]


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _openapi_additions(document: dict[str, Any]) -> dict[str, Any]:
    """Declare what full conformance mode adds: list parameters, logs and single outputs."""
    paths = document.setdefault("paths", {})
    job_list = paths.get("/jobs", {}).get("get")
    if isinstance(job_list, dict):
        job_list["parameters"] = [
            {
                "name": name,
                "in": "query",
                "description": description,
                "required": False,
                "schema": {"type": kind, **({"minimum": 1} if name == "limit" else {})},
                **({"style": "form", "explode": False} if kind == "string" else {}),
            }
            for name, description, kind in _JOB_LIST_PARAMETERS
        ]
        job_list["responses"]["400"] = {"description": "An invalid query parameter value."}
    process_list = paths.get("/processes", {}).get("get")
    if isinstance(process_list, dict):
        process_list.setdefault("parameters", []).append(
            {
                "name": "offset",
                "in": "query",
                "description": "How many processes to skip (the `next` and `prev` links set it).",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
            }
        )
    job_id = _path_parameter("jobId", "job identifier")
    paths["/jobs/{jobId}/logs"] = {
        "get": {
            "summary": "Retrieve a job's logs",
            "description": "The Prefect logs of the job's flow run, oldest first; a "
            "traceback shows as its error line.",
            "operationId": "getJobLogs",
            "tags": ["jobs"],
            "parameters": [job_id],
            "responses": {
                "200": {
                    "description": "The logs.",
                    "content": {"application/json": {"schema": {"type": "array"}}},
                },
                "404": {"description": "No such job."},
            },
        }
    }
    paths["/jobs/{jobId}/results/{outputId}"] = {
        "get": {
            "summary": "Retrieve one output of a job",
            "description": "The value of one output of a successful job, in its media type.",
            "operationId": "getJobOutput",
            "tags": ["jobs"],
            "parameters": [job_id, _path_parameter("outputId", "output identifier")],
            "responses": {
                "200": {"description": "The output's value."},
                "404": {"description": "No such job or output, or no result yet."},
            },
        }
    }
    return document


def create_app() -> Flask:
    """Return pygeoapi's Flask app (configured by PYGEOAPI_CONFIG) in full conformance mode.

    Returns:
        The app, with the job routes answered by this package.

    Raises:
        RuntimeError: When the configured manager is not a `PrefectManager`.
    """
    app: Flask
    app, api = flask_app_and_api()
    manager = api.manager
    if not isinstance(manager, PrefectManager):
        raise RuntimeError(
            "full conformance mode needs server.manager.name: "
            "pygeoapi_prefect.manager.PrefectManager"
        )
    max_body = (
        manager.settings.max_body_bytes or prefect_parameter_limit() or _MAX_BODY_UNLIMITED_PREFECT
    )
    routes = _JobRoutes(manager, api.base_url, max_body)
    views = app.view_functions
    stock: dict[str, Callable[..., Any]] = dict(views)

    def jobs(job_id: str | None = None) -> Any:
        if _wants_html() and request.method == "GET":
            return stock["pygeoapi.get_jobs"](job_id)
        return routes.jobs(job_id)

    def job_result(job_id: str) -> Any:
        if _wants_html():
            return stock["pygeoapi.get_job_result"](job_id)
        return routes.results(job_id)

    def execute(process_id: str) -> Any:
        if process_id not in manager.processes:
            return _problem(HTTPStatus.NOT_FOUND, "NoSuchProcess", f"no process {process_id!r}")
        refused = routes.check_execute()
        if refused is not None:
            return refused
        document = json.loads(request.get_data(cache=True))
        subscriber = document.get("subscriber")
        if isinstance(subscriber, dict) and subscriber and "successUri" not in subscriber:
            # pygeoapi insists on successUri, as the 1.0 schema does by mistake (2.0 and
            # ogcapi-processes#460): a subscriber may want only failures, or progress.
            document["subscriber"] = {**subscriber, "successUri": None}
            replace_request_body(request, json.dumps(document).encode())
        response = stock["pygeoapi.execute_process_jobs"](process_id)
        if response.status_code != 200 or not _is_json(response):
            return response
        defined = manager.processes_outputs(process_id)
        if document.get("response") == "document":
            value = json.loads(response.get_data())
            response.set_data(json.dumps(results_document(value, defined)))
            return response
        modes = transmission_modes(document.get("outputs"), defined)
        job_url = response.headers.get("Location")
        if wants_reshaping(modes) and job_url:
            values = results_document(json.loads(response.get_data()), defined)
            return raw_response(values, modes, defined, job_url)
        return response

    def processes(process_id: str | None = None) -> Any:
        response = stock["pygeoapi.get_processes"](process_id)
        if process_id is not None or response.status_code != 200 or not _is_json(response):
            return response
        try:
            offset = _offset()
        except _BadQuery as err:
            return _problem(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", str(err))
        # pygeoapi lists the first `limit` processes (10 by default) and no more.
        limits = api.config["server"].get("limits", {})
        limit = evaluate_limit(request.args.get("limit"), limits, {})
        document = json.loads(response.get_data())
        names = list(manager.processes)
        if offset:
            document["processes"] = [
                _summary(stock["pygeoapi.get_processes"](name))
                for name in names[offset : offset + limit]
            ]
        params = [(k, v) for k, v in request.args.items(multi=True) if k != "offset"]
        url = f"{api.base_url}/processes"
        pages = [("next", offset + limit)] if offset + limit < len(names) else []
        if offset:
            pages.append(("prev", max(0, offset - limit)))
        document["links"] = [
            *document.get("links", []),
            *(
                {
                    "href": f"{url}?{urlencode([*params, ('offset', str(start))])}",
                    "rel": rel,
                    "type": "application/json",
                }
                for rel, start in pages
            ),
        ]
        response.set_data(json.dumps(document))
        return response

    def conformance() -> Any:
        response = stock["pygeoapi.conformance"]()
        if not _is_json(response):
            return response
        document = json.loads(response.get_data())
        declared = document.get("conformsTo", [])
        document["conformsTo"] = [*declared, *(c for c in CONFORMANCE_CLASSES if c not in declared)]
        response.set_data(json.dumps(document))
        return response

    def openapi() -> Any:
        response = stock["pygeoapi.openapi"]()
        if response.status_code == 200 and _is_json(response):
            document = json.loads(response.get_data())
            response.set_data(json.dumps(_openapi_additions(document)))
        return response

    views["pygeoapi.openapi"] = openapi
    views["pygeoapi.get_processes"] = processes
    views["pygeoapi.get_jobs"] = jobs
    views["pygeoapi.get_job_result"] = job_result
    views["pygeoapi.execute_process_jobs"] = execute
    views["pygeoapi.conformance"] = conformance
    app.add_url_rule("/jobs/<job_id>/logs", "pygeoapi_prefect.job_logs", routes.logs)
    app.add_url_rule(
        "/jobs/<job_id>/results/<output_id>", "pygeoapi_prefect.job_output", routes.result
    )
    app.config["MAX_CONTENT_LENGTH"] = max_body

    @app.before_request
    def no_redirects_under_jobs() -> Response | None:
        """A job id with `%2F` in it is no job: 404, not a redirect to a merged path."""
        if isinstance(request.routing_exception, RequestRedirect) and request.path.startswith(
            "/jobs/"
        ):
            return _problem(HTTPStatus.NOT_FOUND, "NoSuchJob", "no such job")
        return None

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if isinstance(error, OGCHTTPError):
            response: Response = error.get_response()
            return response
        status = HTTPStatus(error.code or 500)
        return _problem(status, status.phrase.replace(" ", ""), error.description or status.phrase)

    @app.errorhandler(PrefectUnavailableError)
    def prefect_unavailable(error: PrefectUnavailableError) -> Response:
        response: Response = error.get_response()
        return response

    @app.after_request
    def ogc_exception_types(response: Response) -> Response:
        """Give pygeoapi's own error documents the OGC exception URIs."""
        if response.status_code < 400 or not _is_json(response):
            return response
        try:
            document = json.loads(response.get_data())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return response
        if isinstance(document, dict) and document.get("type") in EXCEPTION_TYPES:
            document["type"] = EXCEPTION_TYPES[document["type"]]
            response.set_data(json.dumps(document))
        return response

    return app
