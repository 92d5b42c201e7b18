"""Checklist D 33-43, F 56 and 60: input kinds, several outputs, outputs by reference.

The `kinds` test process takes each kind of OGC input (literal, array, bounding box,
binary, object / oneOf) and returns three outputs: `textOutput`, `numbersOutput` and
`areaOutput`.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from email.message import Message
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import EXC, REL, Api, check_exception, modes

AREA = {"bbox": [5.0, 50.0, 6.5, 51.0], "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
INPUTS = {"text": "teststring", "numbers": [1, 2, 3], "area": AREA}
RAW_MULTI = "a raw response of several outputs is one JSON document, not multipart/related"
RAW_REF = "outputs by reference are sent by value"


def _parts(response: httpx.Response) -> list[Message]:
    """The parts of a multipart/related response, by an independent MIME parser."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + response.content, policy=email.policy.HTTP)
    assert message.get_content_type() == "multipart/related"
    return list(message.iter_parts())  # type: ignore[attr-defined]


def _content_id(part: Message) -> str:
    return str(part["Content-ID"]).strip("<>")


def _by_id(response: httpx.Response) -> dict[str, Message]:
    return {_content_id(part): part for part in _parts(response)}


def _raw(api: Api, outputs: dict[str, Any]) -> httpx.Response:
    """Execute `kinds` synchronously with a raw response of these outputs."""
    return api.execute("kinds", INPUTS, asynchronous=False, outputs=outputs, response="raw")


def _link_targets(response: httpx.Response) -> list[str]:
    links = [value for key, value in response.headers.multi_items() if key.lower() == "link"]
    return [link.split(">")[0].lstrip("<") for link in links]


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# -- 33-37: input kinds ------------------------------------------------------------------


@modes()
@pytest.mark.parametrize(
    "inputs",
    [
        {"numbers": [1, 2, 3]},
        {"numbers": [7]},
        {"numbers": 7},
        {"area": AREA},
        {"area": {"bbox": [0, 0, 0, 1, 1, 1]}},
        {"image": {"value": base64.b64encode(b"\x89PNG").decode(), "mediaType": "image/png"}},
        {
            "image": {
                "value": base64.b64encode(b"II*\x00").decode(),
                "format": {"mediaType": "image/tiff", "encoding": "base64"},
            }
        },
        {"image": {"href": "https://example.com/image.tif", "type": "image/tiff"}},
        {"shape": {"type": "Point", "coordinates": [5.0, 50.0]}},
        {
            "shape": {
                "value": {"type": "Point", "coordinates": [5, 50]},
                "mediaType": "application/geo+json",
            }
        },
        {"shape": "home"},
        {"shape": {"value": "work"}},
    ],
    ids=[
        "array",
        "one-element-array",
        "array-as-single-value",
        "bbox",
        "bbox-3d-no-crs",
        "binary-qualified",
        "binary-format",
        "reference",
        "object",
        "object-qualified",
        "oneof-string",
        "oneof-qualified",
    ],
)
def test_input_kinds_are_accepted(api: Api, inputs: dict[str, Any]) -> None:
    response = api.execute("kinds", inputs, asynchronous=False)
    assert response.status_code == 200, response.text
    job_id = api.submit("kinds", inputs)
    assert api.final(job_id)["status"] == "successful"


@modes()
@pytest.mark.parametrize(
    "inputs",
    [
        {"numbers": [1, 2, 3, 4, 5, 6]},
        {"numbers": ["one"]},
        {"area": {"bbox": [0, 0, 1]}},
        {"area": {"bbox": [0, 0, 1, 1], "crs": 4326}},
        {"image": {"value": "AAAA", "mediaType": "image/jpeg"}},
        {"image": {"href": "not a url"}},
        {"shape": {"type": "Polygon", "coordinates": []}},
        {"shape": "school"},
    ],
    ids=[
        "too-many",
        "wrong-item-type",
        "bbox-3-numbers",
        "bbox-crs-not-string",
        "media-type-not-allowed",
        "reference-not-url",
        "object-not-in-oneof",
        "string-not-in-enum",
    ],
)
def test_input_kinds_refused_with_400(api: Api, inputs: dict[str, Any]) -> None:
    body = check_exception(api.execute("kinds", inputs), 400)
    name = next(iter(inputs))
    assert name in json.dumps(body), body


# -- requested outputs -----------------------------------------------------------------------


@modes()
@pytest.mark.parametrize(
    "outputs",
    [
        {"noSuchOutput": {}},
        {"textOutput": {"transmissionMode": "sideways"}},
        {"textOutput": "value"},
        ["textOutput"],
    ],
    ids=["unknown-output", "bad-transmission-mode", "not-an-object", "a-list"],
)
def test_bad_requested_outputs_are_400(api: Api, outputs: Any) -> None:
    check_exception(api.execute("kinds", INPUTS, outputs=outputs), 400)


# -- 38: outputs omitted ---------------------------------------------------------------------


@modes()
def test_outputs_omitted_gives_every_output(api: Api) -> None:
    sync = api.execute("kinds", INPUTS, asynchronous=False, response="document")
    assert sync.status_code == 200, sync.text
    job_id = api.submit("kinds", INPUTS, response="document")
    assert api.final(job_id)["status"] == "successful"
    results = api.get(f"/jobs/{job_id}/results")
    for response in (sync, results):
        for name in ("textOutput", "numbersOutput", "areaOutput"):
            assert name in response.text, response.text
        assert "teststring" in response.text


@modes(stock="response=document answers {'outputs': [...]}, not results.yaml keyed by output id")
def test_document_of_several_outputs_is_keyed_by_output_id(api: Api) -> None:
    response = api.execute("kinds", INPUTS, asynchronous=False, response="document")
    assert response.json() == {
        "textOutput": "teststring",
        "numbersOutput": [1, 2, 3],
        "areaOutput": AREA,
    }


# -- 40-43: raw responses --------------------------------------------------------------------


@modes()
def test_raw_one_output_by_value(api: Api) -> None:
    response = api.execute(
        "kinds", INPUTS, asynchronous=False, outputs={"textOutput": {}}, response="raw"
    )
    assert response.status_code == 200, response.text
    assert "teststring" in response.text


@modes(stock=RAW_MULTI)
def test_raw_several_outputs_are_multipart_related(api: Api) -> None:
    response = api.execute("kinds", INPUTS, asynchronous=False, response="raw")
    assert response.status_code == 200, response.text
    parts = _by_id(response)
    assert set(parts) == {"textOutput", "numbersOutput", "areaOutput"}
    assert _payload(parts["textOutput"]) == b"teststring"
    assert parts["textOutput"].get_content_type() == "text/plain"
    assert json.loads(_payload(parts["numbersOutput"])) == [1, 2, 3]
    assert parts["areaOutput"].get_content_type() == "application/json"
    assert json.loads(_payload(parts["areaOutput"])) == AREA


@modes(stock=RAW_MULTI)
def test_raw_two_requested_outputs_are_the_only_parts(api: Api) -> None:
    outputs = {"numbersOutput": {"transmissionMode": "value"}, "textOutput": {}}
    response = _raw(api, outputs)
    assert response.status_code == 200, response.text
    assert [_content_id(part) for part in _parts(response)] == ["numbersOutput", "textOutput"]


@modes(stock=RAW_REF)
def test_raw_by_reference_is_204_with_a_link_per_output(api: Api) -> None:
    outputs = {
        "textOutput": {"transmissionMode": "reference"},
        "areaOutput": {"transmissionMode": "reference"},
    }
    response = _raw(api, outputs)
    assert response.status_code == 204, response.text
    assert response.content == b""
    targets = _link_targets(response)
    assert len(targets) == 2, response.headers
    text = api.get(targets[0])
    assert text.status_code == 200
    assert text.content == b"teststring"
    area = api.get(targets[1])
    assert area.status_code == 200
    assert area.json() == AREA


@modes(stock=RAW_MULTI)
def test_raw_mixed_value_and_reference(api: Api) -> None:
    outputs = {
        "textOutput": {"transmissionMode": "value"},
        "numbersOutput": {"transmissionMode": "reference"},
    }
    response = _raw(api, outputs)
    assert response.status_code == 200, response.text
    parts = _by_id(response)
    assert _payload(parts["textOutput"]) == b"teststring"
    reference = parts["numbersOutput"]
    assert _payload(reference) == b""
    location = str(reference["Content-Location"])
    assert api.get(location).json() == [1, 2, 3]


# -- 56: async results follow the same rules -------------------------------------------------


@modes(stock=RAW_MULTI)
def test_async_raw_results_of_several_outputs(api: Api) -> None:
    job_id = api.submit("kinds", INPUTS, response="raw")
    assert api.final(job_id)["status"] == "successful"
    response = api.get(f"/jobs/{job_id}/results")
    assert response.status_code == 200
    parts = _by_id(response)
    assert json.loads(_payload(parts["areaOutput"])) == AREA


@modes(stock=RAW_REF)
def test_async_raw_results_by_reference(api: Api) -> None:
    outputs = {"numbersOutput": {"transmissionMode": "reference"}}
    job_id = api.submit("kinds", INPUTS, outputs=outputs, response="raw")
    assert api.final(job_id)["status"] == "successful"
    response = api.get(f"/jobs/{job_id}/results")
    assert response.status_code == 204
    [target] = _link_targets(response)
    assert api.get(target).json() == [1, 2, 3]


# -- 60: one output of a job -----------------------------------------------------------------


@modes(stock="there is no /jobs/{jobId}/results/{outputId} route")
def test_one_output_of_a_job(api: Api) -> None:
    job_id = api.submit("kinds", INPUTS)
    status = api.final(job_id)
    assert status["status"] == "successful"
    response = api.get(f"/jobs/{job_id}/results/numbersOutput")
    assert response.status_code == 200
    assert response.json() == [1, 2, 3]
    assert any(item["rel"] == REL + "results" for item in status["links"])


@modes(stock="there is no /jobs/{jobId}/results/{outputId} route")
def test_unknown_output_of_a_job_is_404(api: Api) -> None:
    job_id = api.submit("kinds", INPUTS, outputs={"textOutput": {}})
    assert api.final(job_id)["status"] == "successful"
    for output in ("numbersOutput", "noSuchOutput"):
        check_exception(api.get(f"/jobs/{job_id}/results/{output}"), 404, EXC + "no-such-output")
