"""Bad input gets a clear OGC exception with a JSON body, never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest

HOSTILE_IDS = [
    "not-a-uuid",
    "x" * 5000,
    "00000000-0000-0000-0000-000000000000",
    "5d2ab0e4-8f21-4c3e-9a7b-0c6f2d9e4b13",  # (a fixed random one: xdist workers collect alike)
    "%00",
    "1;DROP TABLE flow_run",
]


def test_unknown_process(client: Any) -> None:
    response = client.post("/processes/nope/execution", json={"inputs": {}})
    assert response.status_code == 404
    assert response.json["type"] == "NoSuchProcess"
    assert client.get("/processes/nope?f=json").status_code == 404


@pytest.mark.parametrize("job_id", HOSTILE_IDS)
def test_unknown_or_malformed_job_ids(client: Any, job_id: str) -> None:
    for method, path in [
        ("get", f"/jobs/{job_id}?f=json"),
        ("get", f"/jobs/{job_id}/results?f=json"),
        ("delete", f"/jobs/{job_id}?f=json"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 404, (method, path, response.data[:200])
        assert response.is_json, response.data[:200]
        assert "type" in response.json


@pytest.mark.parametrize("path", ["/jobs/../../etc/passwd", "/jobs/..%2F..%2Fetc%2Fpasswd"])
def test_traversal_job_id_in_path(client: Any, path: str) -> None:
    # Flask's router answers these itself: the manager never sees them.
    assert client.get(path).status_code == 404


def test_malformed_execute_body(client: Any) -> None:
    response = client.post(
        "/processes/echo/execution", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.is_json
