"""Where a job is dismissed, or a finished one removed with its results.

`DELETE /jobs/{id}` on a job that has not finished dismisses it: a job this server runs
has its process group killed by the embedded runner, which then ends the flow run
CANCELLED; a job that no process runs yet ends CANCELLED at once; a job run elsewhere (by
a replica or a Prefect worker) is set CANCELLING, and whoever runs it stops it, which the
request waits for (`dismiss_wait`). On a finished job, DELETE removes its result from
result storage and its flow run from Prefect.
"""

from __future__ import annotations

import time
import uuid

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Cancelling

from pygeoapi_prefect.results import ResultStorage
from pygeoapi_prefect.runtime.runner import EmbeddedRunner

__all__ = ["await_final", "dismiss_or_remove"]

_POLL_SECONDS = 0.2
"""How often a flow run that another process runs is read while waiting for its end."""


def dismiss_or_remove(
    client: SyncPrefectClient,
    flow_run: FlowRun,
    results: ResultStorage,
    runner: EmbeddedRunner,
    dismiss_wait: float,
) -> None:
    """Dismiss a job, or remove a finished one with its result.

    Args:
        client: The Prefect API client.
        flow_run: The job's flow run.
        results: Where the job's output is stored.
        runner: The embedded runner (which stops the jobs this host runs).
        dismiss_wait: Seconds to wait for whoever runs the job elsewhere to stop it.
    """
    state = flow_run.state
    if state is not None and state.is_final():
        results.delete(client, state)
        client.delete_flow_run(flow_run.id)
        return
    if runner.cancel(flow_run.id) or runner.dismiss_orphan(flow_run):
        return
    if state is None or state.type in (StateType.SCHEDULED, StateType.PAUSED):
        client.set_flow_run_state(flow_run.id, Cancelled(message="Job dismissed"), force=True)
        return
    client.set_flow_run_state(flow_run.id, Cancelling(message="Job dismissed"), force=True)
    # Whoever runs it (a replica, a worker) stops it; answer once it has.
    await_final(client, flow_run.id, timeout=dismiss_wait)


def await_final(client: SyncPrefectClient, run_id: uuid.UUID, timeout: float) -> bool:
    """Read a flow run that another process runs until it is final, or time is up.

    Args:
        client: The Prefect API client.
        run_id: The flow run id.
        timeout: Seconds to wait.

    Returns:
        Whether the run is final.
    """
    deadline = time.monotonic() + timeout
    while True:
        flow_run = client.read_flow_run(run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
