"""The one table between OGC job status and Prefect flow-run state.

A job's status is read from its flow run's state, a job list filters by status in
Prefect's own query, and a caller that records a status (`add_job`, `update_job`) sets a
state. All three use this table:

| OGC status   | Prefect state types               | State set for the status |
| ------------ | --------------------------------- | ------------------------ |
| `accepted`   | `SCHEDULED`, `PENDING`            | `Scheduled`              |
| `running`    | `RUNNING`, `PAUSED`, `CANCELLING` | `Running`                |
| `successful` | `COMPLETED`                       | `Completed`              |
| `failed`     | `FAILED`, `CRASHED`               | `Failed`                 |
| `dismissed`  | `CANCELLED`                       | `Cancelled`              |

Each state type is in exactly one row. One rule goes before the types: a state named
`AwaitingRetry` or `Retrying` is `running`, whatever its type. Prefect gives these names
to a run between two attempts (`AwaitingRetry` is a `SCHEDULED` state) and to its next
attempt (`Retrying`, a `RUNNING` state): the job has started and is not over. The rule
holds for every type so that a single Prefect filter selects exactly the states that read
as a status (a flow run without a state, which Prefect's API never makes, reads as
`accepted` and matches no filter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from prefect.client.schemas.filters import (
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
    Operator,
)
from prefect.client.schemas.objects import State, StateType
from prefect.states import Cancelled, Completed, Failed, Running, Scheduled
from pygeoapi.util import JobStatus

__all__ = ["job_status", "new_state", "state_filter"]


class _Row(NamedTuple):
    """A row of the table: the state types of a status, and the state that sets it."""

    types: tuple[StateType, ...]
    new_state: Callable[..., State[Any]]


_TABLE: dict[JobStatus, _Row] = {
    JobStatus.accepted: _Row((StateType.SCHEDULED, StateType.PENDING), Scheduled),
    JobStatus.running: _Row((StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING), Running),
    JobStatus.successful: _Row((StateType.COMPLETED,), Completed),
    JobStatus.failed: _Row((StateType.FAILED, StateType.CRASHED), Failed),
    JobStatus.dismissed: _Row((StateType.CANCELLED,), Cancelled),
}

_RUNNING_NAMES = ("AwaitingRetry", "Retrying")
"""Names of the states that read as `running` whatever their type (a run between retries)."""

_STATUS_OF_TYPE = {state_type: status for status, row in _TABLE.items() for state_type in row.types}


def job_status(state_type: StateType | None, state_name: str | None) -> JobStatus:
    """Map a flow run's state to an OGC job status.

    Args:
        state_type: The type of the flow run's state (None: the run has no state).
        state_name: The name of the flow run's state.

    Returns:
        The OGC status. A state type this table does not know (one newer than this
        package) reads as `failed`.
    """
    if state_name in _RUNNING_NAMES:
        return JobStatus.running
    if state_type is None:
        return JobStatus.accepted
    return _STATUS_OF_TYPE.get(state_type, JobStatus.failed)


def state_filter(statuses: Iterable[JobStatus]) -> FlowRunFilterState:
    """The part of a Prefect flow-run filter that selects the runs of these statuses.

    Args:
        statuses: The OGC statuses wanted (at least one).

    Returns:
        A filter that matches a flow run exactly when `job_status` reads its state as one
        of `statuses`.

    Raises:
        ValueError: If `statuses` is empty.
    """
    wanted = set(statuses)
    if not wanted:
        raise ValueError("a state filter needs at least one status")
    types = [
        state_type
        for status in JobStatus
        if status in wanted
        for state_type in _TABLE[status].types
    ]
    names = list(_RUNNING_NAMES)
    # (Prefect's server drops a part of this filter that has two clauses, e.g. a name
    # filter with both any_ and not_any_: each part here has one.)
    if JobStatus.running in wanted:
        # The wanted types, or a retry's name (running whatever the type).
        return FlowRunFilterState(
            operator=Operator.or_,  # type: ignore[call-arg]  # (a field of a plain mixin)
            type=FlowRunFilterStateType(any_=types),
            name=FlowRunFilterStateName(any_=names),
        )
    # The wanted types, and not a retry's name.
    return FlowRunFilterState(
        type=FlowRunFilterStateType(any_=types), name=FlowRunFilterStateName(not_any_=names)
    )


def new_state(status: JobStatus, message: str | None = None, data: Any = None) -> State[Any]:
    """The Prefect state to set on a flow run that a caller records as `status`.

    Args:
        status: The OGC status.
        message: The state's message.
        data: The state's data (a successful job's result record).

    Returns:
        A new state that `job_status` reads as `status`.
    """
    return _TABLE[status].new_state(message=message, data=data)
