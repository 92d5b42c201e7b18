"""The mapping between flow runs and OGC jobs, on its own."""

import uuid

import pytest

from pygeoapi_prefect.jobs import parse_job_id


@pytest.mark.parametrize(
    "job_id",
    [
        "../..",
        "..%2F..",
        "",
        "x" * 10_000,
        "not-a-uuid",
        "{12345678-1234-1234-1234-123456789012}",
        "12345678123412341234123456789012",
        "12345678-1234-1234-1234-12345678901g",
        None,
        42,
    ],
)
def test_only_canonical_uuids_are_job_ids(job_id: object) -> None:
    assert parse_job_id(job_id) is None


def test_uuid_job_ids_parse() -> None:
    value = uuid.uuid4()
    assert parse_job_id(str(value)) == value
    assert parse_job_id(str(value).upper()) == value
