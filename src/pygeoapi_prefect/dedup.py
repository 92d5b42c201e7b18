"""Deduplicated submissions: identical execute requests share one job.

A process with `processor.prefect.dedup` gives each job's flow run an idempotency key, a
hash of what makes two execute requests the same job. The Prefect API creates a flow run
only for a key it does not hold yet, and otherwise answers with the run that has it (in
one statement of its database), so that two replicas that receive the same request at
once still make one job. An earlier job that failed, crashed or was dismissed, or one
older than the process's window, does not count: the request then tries the next key of
a chain, `<key>:after:<that run's id>`, which every replica derives alike.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import FlowRun, StateType

__all__ = [
    "DEDUP_HEADER",
    "DEDUP_KEY_PREFIX",
    "counts",
    "created_here",
    "creation_context",
    "dedup_key",
    "next_key",
]

DEDUP_KEY_PREFIX = "pygeoapi-dedup:"
"""Prefix of the idempotency key of a deduplicated process's job."""

DEDUP_HEADER = "X-Deduplicated"
"""Response header of an execute request answered with an earlier job (its job id)."""

_CREATION = "pygeoapi-creation"
"""Key, in a deduplicated job's flow-run context, of the token of the request that made it."""

_NOT_COUNTING = frozenset(
    {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED, StateType.CANCELLING}
)
"""States of an earlier job that a new identical request does not reuse: failed, crashed,
dismissed, or being dismissed."""


def dedup_key(
    server: str,
    process_id: str,
    version: Any,
    inputs: Any,
    outputs: Any,
    response: str,
) -> str:
    """The idempotency key of an execute request (sync or async alike).

    Args:
        server: The server's id (`server_id`): servers sharing a Prefect API keep apart.
        process_id: The process id.
        version: The process version, from the processor's metadata.
        inputs: The request's `inputs`.
        outputs: The request's `outputs` (requested outputs, transmission modes).
        response: The response form, `raw` or `document`.

    Returns:
        `pygeoapi-dedup:` and the SHA-256 of the canonical JSON of all these (sorted
        keys, no whitespace).
    """
    canonical = json.dumps(
        {
            "server": server,
            "process": process_id,
            "version": version,
            "inputs": inputs,
            "outputs": outputs,
            "response": response,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return DEDUP_KEY_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def counts(flow_run: FlowRun, window: timedelta | None, now: datetime | None = None) -> bool:
    """Whether an earlier job answers a new identical request.

    Args:
        flow_run: The earlier job's flow run.
        window: How long a job counts after its creation (None: forever).
        now: The time of the request (now when not given).

    Returns:
        False for a job that failed, crashed, was (or is being) dismissed, or was created
        longer than `window` ago; True otherwise.
    """
    state = flow_run.state
    if state is not None and state.type in _NOT_COUNTING:
        return False
    if window is None or flow_run.created is None:
        return True
    return flow_run.created >= (now or datetime.now(UTC)) - window


def next_key(key: str, flow_run: FlowRun) -> str:
    """The key to try after an earlier job that does not count (the same on any replica).

    Args:
        key: The request's own key (`dedup_key`).
        flow_run: The earlier job's flow run, found under the previous key.

    Returns:
        `<key>:after:<the run's id>`.
    """
    return f"{key}:after:{flow_run.id}"


def creation_context() -> dict[str, str]:
    """The flow-run context that marks a run as made by this creation request.

    The Prefect API's status code (201 or 200) cannot tell: under concurrent requests for
    one key it may answer 201 to several. A token of this request in the run's context
    does: the run it returns is this request's own only if it carries this token.

    Returns:
        A context of one unique token, to send with the flow run and compare with
        `created_here`.
    """
    return {_CREATION: uuid.uuid4().hex}


def created_here(flow_run: FlowRun, context: dict[str, str]) -> bool:
    """Whether the Prefect API created `flow_run` for the request sent with `context`.

    Args:
        flow_run: The flow run the Prefect API answered with.
        context: The `creation_context` sent with the request.

    Returns:
        True when the run is this request's own, False when it existed already.
    """
    return (flow_run.context or {}).get(_CREATION) == context[_CREATION]
