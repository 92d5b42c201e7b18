"""The mapping between flow runs and OGC jobs, on its own."""

import uuid

import pytest
from prefect.client.schemas.objects import StateType
from pygeoapi.util import JobStatus

from pygeoapi_prefect.jobs import parse_job_id, to_job_status


@pytest.mark.parametrize(
    ("state_type", "name", "expected"),
    [
        (StateType.SCHEDULED, "Scheduled", JobStatus.accepted),
        (StateType.SCHEDULED, "Late", JobStatus.accepted),
        (StateType.PENDING, "Pending", JobStatus.accepted),
        (StateType.SCHEDULED, "AwaitingRetry", JobStatus.running),
        (StateType.RUNNING, "Running", JobStatus.running),
        (StateType.RUNNING, "Retrying", JobStatus.running),
        (StateType.PAUSED, "Paused", JobStatus.running),
        (StateType.CANCELLING, "Cancelling", JobStatus.running),
        (StateType.COMPLETED, "Completed", JobStatus.successful),
        (StateType.FAILED, "Failed", JobStatus.failed),
        (StateType.CRASHED, "Crashed", JobStatus.failed),
        (StateType.CANCELLED, "Cancelled", JobStatus.dismissed),
    ],
)
def test_state_maps_to_status(state_type: StateType, name: str, expected: JobStatus) -> None:
    assert to_job_status(state_type, name) == expected


def test_every_state_type_has_a_status() -> None:
    for state_type in StateType:
        assert isinstance(to_job_status(state_type, None), JobStatus)


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
