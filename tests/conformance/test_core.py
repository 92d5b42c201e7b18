"""Checklist A-H: core, process description, JSON and OpenAPI 3.0 classes."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
from jsonschema import Draft202012Validator
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from tests.conformance.conftest import (
    CONF,
    ECHO,
    EXC,
    ORDER,
    REL,
    SLOW_PAUSE,
    TERMINAL,
    Api,
    Receiver,
    check_exception,
    check_status_info,
    full_only,
    is_json,
    job_id_of,
    link,
    links,
    modes,
    parse_time,
)
from tests.conftest import wait_for

SHORT_CODES = "exception types are short codes (NoSuchProcess, NoSuchJob...), not OGC URIs"


def _rel(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Links of an OGC rel, full URI or (as the ETS accepts) short form."""
    return links(doc, REL + name) + links(doc, name)


# -- A. landing page, API definition, conformance, HTTP -------------------------------------


@modes()
def test_core_landing_page(api: Api) -> None:
    response = api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert isinstance(doc.get("links"), list)
    assert links(doc, "service-desc") or links(doc, "service-doc")
    assert _rel(doc, "conformance")
    assert _rel(doc, "processes")


@modes()
def test_core_landing_page_links_job_list(api: Api) -> None:
    job_lists = links(api.get("/").json(), REL + "job-list")
    assert any(httpx.URL(item["href"]).path == "/jobs" for item in job_lists), job_lists


@modes()
def test_core_http_1_1(api: Api) -> None:
    assert api.get("/").http_version == "HTTP/1.1"
    assert api.get("/processes").http_version == "HTTP/1.1"


@modes()
def test_core_api_definition_links_resolve(api: Api) -> None:
    doc = api.get("/").json()
    definitions = links(doc, "service-desc") + links(doc, "service-doc")
    assert definitions
    for item in definitions:
        response = api.http.get(item["href"])
        assert response.status_code == 200, item


@modes()
def test_core_conformance(api: Api) -> None:
    response = api.get("/conformance")
    assert response.status_code == 200
    conforms = response.json()["conformsTo"]
    assert isinstance(conforms, list)
    assert all(isinstance(item, str) for item in conforms)
    for name in ("core", "ogc-process-description", "json"):
        assert CONF + name in conforms, name


@modes()
def test_core_declared_classes_are_implemented(api: Api) -> None:
    """Checklist 7: every declared class answers (no over-declaration)."""
    conforms = set(api.get("/conformance").json()["conformsTo"])
    if CONF + "job-list" in conforms:
        assert api.get("/jobs").status_code != 404
    if CONF + "dismiss" in conforms:
        assert api.delete(f"/jobs/{uuid.uuid4()}").status_code != 405
    if CONF + "callback" in conforms:
        response = api.execute("echo", ECHO, subscriber={"successUri": "http://127.0.0.1:9/s"})
        assert response.status_code in (200, 201), response.text
    if CONF + "oas30" in conforms:
        assert links(api.get("/").json(), "service-desc")


@modes()
def test_core_unknown_path_is_404(api: Api) -> None:
    assert api.get(f"/no-such-path-{uuid.uuid4()}").status_code == 404


@modes()
def test_core_cors(api: Api) -> None:
    response = api.http.options(
        f"{api.base}/processes",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code in (200, 204)
    assert response.headers.get("access-control-allow-origin") in ("*", "https://example.org")
    exposed = {
        item.strip().lower()
        for item in response.headers.get("access-control-expose-headers", "").split(",")
    }
    assert "*" in exposed or {"location", "link", "preference-applied"} <= exposed, exposed


@modes()
def test_core_head(api: Api) -> None:
    response = api.http.head(f"{api.base}/processes")
    assert response.status_code == 200
    assert response.content == b""


# -- B. process list ------------------------------------------------------------------------


@modes()
def test_core_process_list(api: Api) -> None:
    response = api.get("/processes")
    assert response.status_code == 200
    doc = response.json()
    assert isinstance(doc["processes"], list) and isinstance(doc["links"], list)
    ids = [summary["id"] for summary in doc["processes"]]
    assert "echo" in ids
    for summary in doc["processes"]:
        assert isinstance(summary["id"], str) and isinstance(summary["version"], str)
        assert set(summary.get("jobControlOptions", [])) <= {
            "sync-execute",
            "async-execute",
            "dismiss",
        }
        assert set(summary.get("outputTransmission", [])) <= {"value", "reference"}
    assert links(doc, "self")


@modes()
def test_core_process_summaries_link_to_themselves(api: Api) -> None:
    for summary in api.get("/processes").json()["processes"]:
        hrefs = [httpx.URL(item["href"]).path for item in links(summary, "self")]
        assert f"/processes/{summary['id']}" in hrefs, summary["links"]


@modes()
def test_core_process_list_limit(api: Api) -> None:
    response = api.get("/processes", params={"limit": 1})
    assert response.status_code == 200
    assert len(response.json()["processes"]) == 1


@modes()
@pytest.mark.parametrize("value", ["0", "abc", "-1"])
def test_core_process_list_invalid_limit(api: Api, value: str) -> None:
    check_exception(api.get("/processes", params={"limit": value}), 400)


@modes()
def test_core_process_list_huge_limit(api: Api) -> None:
    response = api.get("/processes", params={"limit": 100000})
    assert response.status_code in (200, 400)
    assert is_json(response)


@modes(stock="pygeoapi's process list has no next links (SHOULD /rec/core/process-list-next-1)")
def test_core_process_list_paging(api: Api) -> None:
    everything = [p["id"] for p in api.get("/processes").json()["processes"]]
    assert len(everything) > 2
    doc = api.get("/processes", params={"limit": 2}).json()
    seen = [p["id"] for p in doc["processes"]]
    while (nxt := link(doc, "next")) is not None:
        assert len(seen) <= len(everything)
        doc = api.get(nxt["href"]).json()
        seen += [p["id"] for p in doc["processes"]]
    assert sorted(seen) == sorted(everything)
    assert link(doc, "prev") is not None


@full_only
@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_core_process_list_invalid_offset(api: Api, value: str) -> None:
    check_exception(api.get("/processes", params={"offset": value}), 400)


# -- C. process description ---------------------------------------------------------------


@modes()
def test_procdesc_echo(api: Api) -> None:
    response = api.get("/processes/echo")
    assert response.status_code == 200
    doc = response.json()
    assert doc["id"] == "echo"
    assert isinstance(doc["version"], str)
    assert isinstance(doc["inputs"], dict) and "echoInput" in doc["inputs"]
    assert isinstance(doc["outputs"], dict) and "echoOutput" in doc["outputs"]
    assert isinstance(doc["jobControlOptions"], list)
    assert isinstance(doc["links"], list)


def _lenient(schema: Any) -> Any:
    """An OAS schema as JSON Schema: `nullable` dropped."""
    if isinstance(schema, dict):
        return {key: _lenient(value) for key, value in schema.items() if key != "nullable"}
    if isinstance(schema, list):
        return [_lenient(value) for value in schema]
    return schema


@modes()
def test_procdesc_schemas_are_json_schema(api: Api) -> None:
    ids = [p["id"] for p in api.get("/processes", params={"limit": 100}).json()["processes"]]
    assert ids
    for process_id in ids:
        doc = api.get(f"/processes/{process_id}").json()
        for kind in ("inputs", "outputs"):
            for name, description in doc[kind].items():
                schema = _lenient(description["schema"])
                Draft202012Validator.check_schema(schema)
                for sub in schema.get("oneOf", []):
                    Draft202012Validator.check_schema(sub)
                if kind == "inputs":
                    low, high = description.get("minOccurs", 1), description.get("maxOccurs", 1)
                    assert isinstance(low, int) and low >= 0, (process_id, name)
                    assert high == "unbounded" or (isinstance(high, int) and high >= 1), name


@modes()
def test_procdesc_execute_link(api: Api) -> None:
    doc = api.get("/processes/echo").json()
    paths = [httpx.URL(item["href"]).path for item in links(doc, REL + "execute")]
    assert "/processes/echo/execution" in paths


@modes()
def test_procdesc_unknown_process(api: Api) -> None:
    check_exception(api.get(f"/processes/no-such-process-{uuid.uuid4()}"), 404)


# -- exception types (OGC URIs) -------------------------------------------------------------


ERROR_CASES = {
    "process": ("GET", "/processes/no-such-process-{u}", 404, "no-such-process"),
    "execute": ("POST", "/processes/no-such-process-{u}/execution", 404, "no-such-process"),
    "job": ("GET", "/jobs/invalid-job-{u}", 404, "no-such-job"),
    "results": ("GET", "/jobs/invalid-job-{u}/results", 404, "no-such-job"),
}


def _error_request(api: Api, case: str) -> httpx.Response:
    method, template, _, _ = ERROR_CASES[case]
    path = template.format(u=uuid.uuid4())
    if method == "POST":
        return api.post(path, json={"inputs": ECHO}, headers={"Content-Type": "application/json"})
    return api.get(path)


@modes()
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_core_error_status(api: Api, case: str) -> None:
    check_exception(_error_request(api, case), ERROR_CASES[case][2])


@modes(stock=SHORT_CODES)
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_core_error_type(api: Api, case: str) -> None:
    _, _, status, name = ERROR_CASES[case]
    check_exception(_error_request(api, case), status, EXC + name)


# -- D. execution ---------------------------------------------------------------------------


@modes()
def test_core_execute_default_is_sync(api: Api) -> None:
    response = api.execute("echo", ECHO, asynchronous=False)
    assert response.status_code == 200, response.text
    assert "teststring" in response.text


@modes()
def test_core_execute_async(api: Api) -> None:
    response = api.execute("echo", ECHO)
    assert response.status_code == 201, response.text
    assert is_json(response)
    doc = response.json()
    check_status_info(doc)
    assert doc["status"] in {"accepted", "running", "successful"}
    location = response.headers["Location"]
    assert location.rstrip("/").split("/")[-1] == job_id_of(doc)
    assert api.get(location).status_code == 200
    assert response.headers.get("Preference-Applied") == "respond-async"


@modes()
def test_core_execute_respond_async_on_sync_only_process(api: Api) -> None:
    summaries = api.get("/processes", params={"limit": 100}).json()["processes"]
    sync_only = [p["id"] for p in summaries if "async-execute" not in p["jobControlOptions"]]
    if not sync_only:
        pytest.skip("no sync-only process is configured (checklist 27)")
    response = api.execute(sync_only[0], {}, asynchronous=True)
    assert response.status_code == 200
    assert response.headers.get("Preference-Applied") != "respond-async"


@modes()
def test_core_execute_not_json_is_400(api: Api) -> None:
    response = api.post(
        "/processes/echo/execution",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    check_exception(response, 400)


@modes()
@pytest.mark.parametrize(
    "inputs",
    [{}, {"echoInput": 5}, {"echoInput": "x", "pause": -1}, {"echoInput": "x", "pause": "abc"}],
    ids=["missing", "wrong-type", "below-minimum", "not-a-number"],
)
def test_core_execute_invalid_inputs_are_400(api: Api, inputs: dict[str, Any]) -> None:
    check_exception(api.execute("echo", inputs), 400)


@modes(stock="response=document answers {'outputs': [...]}, not results.yaml keyed by output id")
def test_core_execute_sync_document(api: Api) -> None:
    response = api.execute("echo", ECHO, asynchronous=False, response="document")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert set(doc) == {"echoOutput"}, doc
    value = doc["echoOutput"]
    assert value == "teststring" or (isinstance(value, dict) and value.get("value") == "teststring")


@modes()
def test_core_execute_sync_raw(api: Api) -> None:
    response = api.execute("echo", ECHO, asynchronous=False, response="raw")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "teststring" in response.text


@modes()
def test_core_execute_sync_raw_binary(api: Api) -> None:
    response = api.execute("binary", {"size": 300}, asynchronous=False, response="raw")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/octet-stream")
    assert response.content == (bytes(range(256)) * 2)[:300]


@modes()
def test_core_execute_sync_job_is_monitorable(api: Api) -> None:
    """Checklist 46: a sync execution that created a job points at it."""
    response = api.execute("echo", ECHO, asynchronous=False)
    assert response.status_code == 200
    monitor = response.links.get("monitor", {}).get("url") or response.headers.get("Location")
    assert monitor, response.headers
    doc = api.get(monitor).json()
    check_status_info(doc)
    assert doc["status"] == "successful"


# -- E. job status --------------------------------------------------------------------------


@modes()
def test_core_job_status(api: Api) -> None:
    job_id = api.submit("echo", ECHO)
    doc = api.status(job_id)
    check_status_info(doc)
    assert doc["jobID"] == job_id
    assert doc["processID"] == "echo"
    assert doc["type"] == "process"


@modes()
def test_core_job_statuses_and_timestamps(api: Api) -> None:
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": 1.5})
    seen = api.poll(job_id, interval=0.05)
    statuses = [doc["status"] for doc in seen]
    assert statuses[-1] == "successful", seen[-1]
    assert "running" in statuses, statuses
    for before, after in itertools.pairwise(seen):
        assert ORDER[before["status"]] <= ORDER[after["status"]], statuses
        if before["status"] != after["status"]:
            assert after["updated"] != before["updated"], (before, after)
        assert parse_time(after["updated"]) >= parse_time(before["updated"])
        assert after["created"] == seen[0]["created"]
    for doc in seen:
        check_status_info(doc)
        assert doc.get("created"), doc
        if doc["status"] != "accepted":
            assert doc.get("started"), doc
        assert bool(doc.get("finished")) == (doc["status"] in TERMINAL), doc
    last = seen[-1]
    assert (
        parse_time(last["created"]) <= parse_time(last["started"]) <= parse_time(last["finished"])
    )
    # Nothing changes after the terminal state.
    again = api.status(job_id)
    assert again["status"] == "successful"
    assert again["finished"] == last["finished"]


@modes()
def test_core_progress(api: Api) -> None:
    job_id = api.submit("progress", {"steps": 4, "stepSeconds": 0.4})
    seen = api.poll(job_id, interval=0.1)
    values = [doc["progress"] for doc in seen if doc.get("progress") is not None]
    assert all(isinstance(v, int) and 0 <= v <= 100 for v in values), values
    assert values == sorted(values), values
    assert seen[-1]["status"] == "successful"
    assert seen[-1]["progress"] == 100


@modes()
def test_core_job_results_link(api: Api) -> None:
    job_id = api.submit("echo", ECHO)
    doc = api.final(job_id)
    assert doc["status"] == "successful"
    results = links(doc, REL + "results")
    assert [httpx.URL(item["href"]).path for item in results] == [f"/jobs/{job_id}/results"]
    assert api.get(results[0]["href"]).status_code == 200


@modes(stock="job status documents carry no self/monitor link")
def test_core_job_self_link_while_running(api: Api) -> None:
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": 2})
    try:
        doc = api.wait_status(job_id, {"running"})
        own = links(doc, "self") + links(doc, "monitor") + links(doc, "status")
        assert any(httpx.URL(item["href"]).path == f"/jobs/{job_id}" for item in own), doc
        assert not links(doc, REL + "results") or doc["status"] == "successful", doc
    finally:
        api.delete(f"/jobs/{job_id}")


@modes(stock="job status documents have no log link and there is no /jobs/{id}/logs")
def test_core_job_log_link(api: Api) -> None:
    job_id = api.submit("echo", ECHO)
    doc = api.final(job_id)
    logs = links(doc, REL + "log")
    assert [httpx.URL(item["href"]).path for item in logs] == [f"/jobs/{job_id}/logs"], doc
    response = api.get(logs[0]["href"])
    assert response.status_code == 200
    assert is_json(response)
    entries = response.json()
    assert isinstance(entries, list) and entries, entries
    for entry in entries:
        assert {"timestamp", "level", "message"} <= set(entry), entry
        parse_time(entry["timestamp"])
        assert isinstance(entry["message"], str)


@full_only
def test_core_engine_job_logs_reach_prefect(api: Api) -> None:
    """A job run by Prefect's flow engine in its own process ships its log lines before
    the process ends (the process skips Python's teardown, not its exit hooks)."""
    job_id = api.submit("word-stats", {"text": "the cat and the hat"})
    assert api.final(job_id)["status"] == "successful"
    messages = [entry["message"] for entry in api.get(f"/jobs/{job_id}/logs").json()]
    assert any("Finished in state Completed" in message for message in messages), messages


@full_only
def test_core_job_logs_show_a_traceback_as_its_error_line(api: Api, receiver: Receiver) -> None:
    """Anyone may read a job's logs: a traceback shows as its error line, with no source
    lines or install paths; the whole traceback stays in Prefect's log."""
    _, subscriber = receiver.subscriber()
    # With a subscriber the job runs in Prefect's flow engine, which logs the traceback.
    job_id = api.submit("fail", {"message": "boom-7c1"}, subscriber=subscriber)
    assert api.final(job_id)["status"] == "failed"
    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(job_id)]))
    with get_client(sync_client=True) as prefect:
        wait_for(
            lambda: [log.message for log in prefect.read_logs(log_filter=run_filter)],
            lambda lines: any("Traceback (most recent call last)" in line for line in lines),
            timeout=60,
            interval=0.2,
            message="a traceback in Prefect's log",
        )
    messages = [entry["message"] for entry in api.get(f"/jobs/{job_id}/logs").json()]
    assert any(message.endswith("ProcessorExecuteError: boom-7c1") for message in messages), (
        messages
    )
    for message in messages:
        assert "Traceback" not in message and 'File "' not in message, message


@modes()
def test_core_failed_job_status(api: Api) -> None:
    job_id = api.submit("fail", {"message": "boom-9f3"})
    doc = api.final(job_id)
    assert doc["status"] == "failed"
    assert "boom-9f3" in doc["message"]
    assert not links(doc, REL + "results")


# -- F. job results -------------------------------------------------------------------------


@modes()
def test_core_results(api: Api) -> None:
    job_id = api.submit("echo", ECHO)
    assert api.final(job_id)["status"] == "successful"
    first = api.get(f"/jobs/{job_id}/results")
    assert first.status_code == 200
    assert "teststring" in first.text
    second = api.get(f"/jobs/{job_id}/results")
    assert second.content == first.content


@modes(stock="response=document answers {'outputs': [...]}, not results.yaml keyed by output id")
def test_core_results_document(api: Api) -> None:
    job_id = api.submit("echo", ECHO, response="document")
    assert api.final(job_id)["status"] == "successful"
    response = api.get(f"/jobs/{job_id}/results")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert set(doc) == {"echoOutput"}, doc


@modes()
def test_core_results_binary(api: Api) -> None:
    job_id = api.submit("binary", {"size": 1000})
    assert api.final(job_id)["status"] == "successful"
    response = api.get(f"/jobs/{job_id}/results")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/octet-stream")
    assert response.content == (bytes(range(256)) * 4)[:1000]


def _results_while_running(api: Api) -> httpx.Response:
    job_id = api.submit("echo", {"echoInput": "teststring", "pause": SLOW_PAUSE})
    try:
        return api.get(f"/jobs/{job_id}/results")
    finally:
        api.delete(f"/jobs/{job_id}")


@modes()
def test_core_results_not_ready(api: Api) -> None:
    check_exception(_results_while_running(api), 404)


@modes(stock=SHORT_CODES)
def test_core_results_not_ready_type(api: Api) -> None:
    check_exception(_results_while_running(api), 404, EXC + "result-not-ready")


@modes()
def test_core_failed_job_results_are_an_error(api: Api) -> None:
    job_id = api.submit("fail", {"message": "boom-7a1"})
    assert api.final(job_id)["status"] == "failed"
    response = api.get(f"/jobs/{job_id}/results")
    assert response.status_code >= 400
    check_exception(response, response.status_code)


@modes(stock="failed-job results answer 400 'job failed' without the failure message")
def test_core_failed_job_results_carry_the_message(api: Api) -> None:
    job_id = api.submit("fail", {"message": "boom-7a2"})
    assert api.final(job_id)["status"] == "failed"
    response = api.get(f"/jobs/{job_id}/results")
    assert 400 <= response.status_code < 500
    body = check_exception(response, response.status_code)
    assert "boom-7a2" in (body.get("description", "") + body.get("detail", "")), body


# -- G. JSON --------------------------------------------------------------------------------


@modes()
@pytest.mark.parametrize(
    "path", ["/", "/conformance", "/processes", "/processes/echo", "/jobs", "/jobs/{job}"]
)
def test_json_documents(api: Api, path: str) -> None:
    if "{job}" in path:
        path = path.format(job=api.submit("echo", ECHO))
    response = api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), dict)


@modes()
def test_json_async_execute_response(api: Api) -> None:
    response = api.execute("echo", ECHO)
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    check_status_info(response.json())


@modes()
def test_json_errors(api: Api) -> None:
    """Checklist 65: error responses are JSON exceptions."""
    u = uuid.uuid4()
    responses = [
        api.get(f"/processes/nope-{u}"),
        api.get(f"/jobs/nope-{u}"),
        api.get(f"/jobs/nope-{u}/results"),
        api.delete(f"/jobs/nope-{u}"),
        api.get("/processes", params={"limit": 0}),
        api.execute("echo", {}),
        api.post(
            "/processes/echo/execution", content=b"[", headers={"Content-Type": "application/json"}
        ),
    ]
    for response in responses:
        assert response.status_code >= 400, response.request.url
        check_exception(response, response.status_code)


@modes()
@pytest.mark.parametrize("path", ["/", "/processes", "/processes/echo", "/conformance"])
def test_json_f_json_is_accept_json(api: Api, path: str) -> None:
    by_query = api.http.get(f"{api.base}{path}", params={"f": "json"})
    by_header = api.get(path)
    assert by_query.status_code == by_header.status_code == 200
    assert by_query.json() == by_header.json()


@modes()
def test_json_unsupported_accept(api: Api) -> None:
    response = api.get("/processes", headers={"Accept": "application/x-unsupported"})
    assert response.status_code == 406 or (
        response.status_code == 200
        and response.headers["content-type"].startswith("application/json")
    )


# -- H. OpenAPI 3.0 ---------------------------------------------------------------------------


def _openapi(api: Api) -> dict[str, Any]:
    desc = links(api.get("/").json(), "service-desc")
    assert desc
    response = api.http.get(
        desc[0]["href"], headers={"Accept": "application/vnd.oai.openapi+json;version=3.0"}
    )
    assert response.status_code == 200
    media = response.headers["content-type"].split(";")[0]
    assert media in ("application/vnd.oai.openapi+json", "application/json"), media
    return dict(response.json())


@modes()
def test_oas_service_desc(api: Api) -> None:
    doc = _openapi(api)
    assert str(doc["openapi"]).startswith("3.0")
    for item in links(api.get("/").json(), "service-doc"):
        response = api.http.get(item["href"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")


def _external_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(("http://", "https://")):
            yield ref
        for value in node.values():
            yield from _external_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _external_refs(value)


def _stand_ins(refs: Iterator[str]) -> dict[str, dict[str, Any]]:
    """Offline stand-ins for the OGC documents the definition refers to, by URL.

    Each referenced component is replaced by the smallest valid component of its kind, so
    that the definition's own structure is validated without the network.
    """
    documents: dict[str, dict[str, Any]] = {}
    for ref in refs:
        url, _, fragment = ref.partition("#")
        node = documents.setdefault(url, {})
        parts = [part for part in fragment.split("/") if part]
        if not parts:  # a whole document: a schema file, `{}` stands in for it
            continue
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if "parameters" in parts:
            node[parts[-1]] = {"name": parts[-1], "in": "query", "schema": {"type": "string"}}
        elif "responses" in parts:
            node[parts[-1]] = {"description": f"stand-in for {ref}"}
        else:
            node[parts[-1]] = {}
    return documents


@modes()
def test_oas_validates(api: Api) -> None:
    """/req/oas30/oas-definition-2: the definition is valid OpenAPI 3.0 (OGC's own
    documents it refers to are replaced by stand-ins: there is no network here)."""
    from openapi_spec_validator import OpenAPIV30SpecValidator

    doc = _openapi(api)
    documents = _stand_ins(_external_refs(doc))

    class Offline(OpenAPIV30SpecValidator):  # type: ignore[misc]
        resolver_handlers: ClassVar[dict[str, Any]] = {
            scheme: lambda uri: documents[uri.partition("#")[0]] for scheme in ("http", "https")
        }

    Offline(doc).validate()


def _declares(doc: dict[str, Any], method: str, path: str) -> bool:
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "/?$"
        if re.match(pattern, path) and method.lower() in item:
            return True
    return False


@modes()
def test_oas_paths_cover_the_api(api: Api) -> None:
    doc = _openapi(api)
    expected = [
        ("get", "/"),
        ("get", "/conformance"),
        ("get", "/processes"),
        ("get", "/processes/echo"),
        ("post", "/processes/echo/execution"),
        ("get", "/jobs"),
        ("get", "/jobs/some-job"),
        ("delete", "/jobs/some-job"),
        ("get", "/jobs/some-job/results"),
    ]
    missing = [pair for pair in expected if not _declares(doc, *pair)]
    assert not missing, missing


@modes(stock="there is no /jobs/{jobId}/logs route")
def test_oas_declares_logs(api: Api) -> None:
    assert _declares(_openapi(api), "get", "/jobs/some-job/logs")
