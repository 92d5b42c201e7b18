"""The one table between OGC job status and Prefect state: reading, filtering, setting."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State, StateType
from prefect.states import (
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    InfrastructurePending,
    Late,
    Paused,
    Pending,
    Retrying,
    Running,
    Scheduled,
    Submitting,
    Suspended,
)
from pygeoapi.util import JobStatus

from pygeoapi_prefect.status import job_status, new_state, state_filter

# Every state type: the status it reads as, and whether setting that status gives this
# type back (each status sets one type; the other types of its row read as it too).
TABLE: dict[StateType, tuple[JobStatus, bool]] = {
    StateType.SCHEDULED: (JobStatus.accepted, True),
    StateType.PENDING: (JobStatus.accepted, False),
    StateType.RUNNING: (JobStatus.running, True),
    StateType.PAUSED: (JobStatus.running, False),
    StateType.CANCELLING: (JobStatus.running, False),
    StateType.COMPLETED: (JobStatus.successful, True),
    StateType.FAILED: (JobStatus.failed, True),
    StateType.CRASHED: (JobStatus.failed, False),
    StateType.CANCELLED: (JobStatus.dismissed, True),
}


def test_the_table_has_every_state_type() -> None:
    assert set(TABLE) == set(StateType)


@pytest.mark.parametrize(("state_type", "row"), TABLE.items(), ids=lambda v: str(v))
def test_each_state_type_maps_to_one_status(
    state_type: StateType, row: tuple[JobStatus, bool]
) -> None:
    status, round_trips = row
    name = State(type=state_type).name  # (the name Prefect gives a state of this type)
    assert job_status(state_type, name) == status
    # Exactly one status's filter selects the type.
    selecting = [s for s in JobStatus if state_type in _filter_types(s)]
    assert selecting == [status]
    # The state a caller's status sets reads as that status, and is of this type when
    # the type is the one the status sets.
    state = new_state(status)
    assert job_status(state.type, state.name) == status
    assert (state.type == state_type) is round_trips


def _filter_types(status: JobStatus) -> list[StateType]:
    part = state_filter([status]).type
    assert part is not None and part.any_ is not None
    return part.any_


@pytest.mark.parametrize("status", JobStatus)
def test_setting_a_status_reads_it_back(status: JobStatus) -> None:
    state = new_state(status, "a message", {"kept": True})
    assert job_status(state.type, state.name) == status
    assert state.message == "a message"
    assert state.data == {"kept": True}


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (Late(), JobStatus.accepted),
        (AwaitingConcurrencySlot(), JobStatus.accepted),
        (Submitting(), JobStatus.accepted),
        (AwaitingRetry(), JobStatus.running),
        (Retrying(), JobStatus.running),
        (Suspended(), JobStatus.running),
    ],
    ids=lambda v: v.name if isinstance(v, State) else str(v),
)
def test_named_states(state: State[Any], status: JobStatus) -> None:
    assert job_status(state.type, state.name) == status


def test_a_run_without_a_state_is_accepted() -> None:
    assert job_status(None, None) == JobStatus.accepted


def test_a_filter_needs_a_status() -> None:
    with pytest.raises(ValueError, match="at least one status"):
        state_filter([])


def _states() -> list[State[Any]]:
    """A state of every type, and every name Prefect gives a state a job can be in."""
    later = datetime.now(UTC) + timedelta(hours=1)
    return [
        Scheduled(scheduled_time=later),
        Late(scheduled_time=later),
        AwaitingRetry(scheduled_time=later),
        AwaitingConcurrencySlot(scheduled_time=later),
        Pending(),
        Submitting(),
        InfrastructurePending(),
        Running(),
        Retrying(),
        Paused(),
        Cancelling(),
        Completed(),
        Failed(),
        Crashed(),
        Cancelled(),
    ]


def test_prefect_filters_exactly_the_runs_that_read_as_the_statuses(prefect_api: str) -> None:
    # Flow runs of no job (no tags), in every state, in the real Prefect API: for every
    # set of statuses, Prefect's query returns exactly the runs that read as one of them.
    @flow(name="status-table")
    def never_run() -> None:
        """Never run."""

    states = _states()
    assert {state.type for state in states} == set(StateType)
    with get_client(sync_client=True) as prefect:
        run_ids = []
        for state in states:
            run_id = prefect.create_flow_run(never_run).id
            prefect.set_flow_run_state(run_id, state, force=True)
            run_ids.append(run_id)
        read = {
            run.id: job_status(run.state_type, run.state_name)
            for run in prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
            )
        }
        expected = [job_status(state.type, state.name) for state in states]
        assert [read[run_id] for run_id in run_ids] == expected
        for size in range(1, len(JobStatus) + 1):
            for statuses in itertools.combinations(JobStatus, size):
                matched = prefect.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=run_ids), state=state_filter(statuses)
                    )
                )
                wanted = {run_id for run_id, status in read.items() if status in statuses}
                assert {run.id for run in matched} == wanted, statuses
