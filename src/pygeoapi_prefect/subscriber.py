"""What a job tells its subscriber, and when (OGC API - Processes callbacks).

At submit time the manager checks every subscriber URL (`callbacks.check_callback_url`;
a refused URL is a 400 before any flow run exists) and records them, with the operator's
allow-list, as a label of the job's flow run. The job's flow carries state hooks that
deliver the callbacks from wherever the job runs, the web server's job process or a
worker: `inProgressUri` when it starts, `successUri` with its results, `failedUri` with its
status when it fails or crashes. Each delivery runs in a thread of its own, with retries
and a deadline per attempt, so that a slow or refused subscriber never holds the job up or
changes its status. When the job's process exits it waits for deliveries still under way,
but at most `DELIVERY_GRACE` seconds: a subscriber cannot keep a job's process, and so its
job slot, for longer. Logs name a callback URL without its query or user information.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun, State
from pygeoapi.util import Subscriber

from pygeoapi_prefect.callbacks import (
    CallbackURLError,
    check_callback_url,
    display_url,
    send_callback,
)
from pygeoapi_prefect.jobs import process_id_of
from pygeoapi_prefect.results import as_job_output
from pygeoapi_prefect.schemas import StatusCode, StatusInfo

__all__ = [
    "DELIVERY_GRACE",
    "LABEL_SUBSCRIBER",
    "attach_hooks",
    "notify_failed",
    "subscriber_document",
    "subscriber_labels",
]

LOGGER = logging.getLogger(__name__)

LABEL_SUBSCRIBER = "pygeoapi.subscriber"
"""Flow-run label holding the subscriber URLs and the allow-list, as JSON."""

DELIVERY_GRACE = 30.0
"""Seconds a process waits, when it exits, for callbacks still being delivered.

A delivery takes at most about 29 s (a 5 s resolver limit, then 4 attempts of at most
5 s each, with 3.5 s of backoff between them), so this cuts short only a delivery that is
stuck in a way its own limits did not foresee.
"""

_pending: set[threading.Thread] = set()
_pending_lock = threading.Lock()
_exit_hook: list[bool] = []


def subscriber_document(subscriber: Subscriber | None) -> dict[str, Any] | None:
    """The `subscriber` of an execute request, as pygeoapi parsed it, as JSON.

    Args:
        subscriber: The subscriber pygeoapi parsed, if any.

    Returns:
        `successUri`, `inProgressUri` and `failedUri` (null when not given), or None.
    """
    if subscriber is None:
        return None
    # (a plain mapping, not a model: the values are as the client sent them, which may be
    # anything, nested too deep to serialise, until `validate_bounds` has checked them)
    return {
        "successUri": subscriber.success_uri,
        "inProgressUri": subscriber.in_progress_uri,
        "failedUri": subscriber.failed_uri,
    }


def subscriber_labels(subscriber: Subscriber | None, allow: list[str]) -> dict[str, str]:
    """Check a subscriber's URLs and return the flow-run labels that record them.

    Args:
        subscriber: The subscriber pygeoapi parsed from the execute request.
        allow: Networks or host names callbacks may reach despite the SSRF guard.

    Returns:
        The labels to put on the job's flow run (none without a subscriber).

    Raises:
        CallbackURLError: When a URL is malformed or refused.
    """
    uris = subscriber_document(subscriber)
    if uris is None:
        return {}
    for name, uri in uris.items():
        if uri is not None:
            try:
                check_callback_url(uri, allow)
            except CallbackURLError as err:
                raise CallbackURLError(f"subscriber {name}: {err}") from err
    recorded = {name: uri for name, uri in uris.items() if uri}
    if not recorded:
        return {}
    return {LABEL_SUBSCRIBER: json.dumps({**recorded, "allow": allow})}


def _subscriber(flow_run: FlowRun) -> dict[str, Any] | None:
    raw = (flow_run.labels or {}).get(LABEL_SUBSCRIBER)
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _status_info(flow_run: FlowRun, status: StatusCode, message: str | None) -> dict[str, Any]:
    """The status info a callback sends: what is given, a None as null."""
    return StatusInfo(
        job_id=str(flow_run.id),
        process_id=process_id_of(flow_run),
        type="process",
        status=status,
        message=message,
        updated=datetime.now(UTC).isoformat(),
    ).to_json_dict(exclude_unset=True)


def _deliver(flow_run: FlowRun, which: str, payload: Any) -> None:
    """Send one callback in a daemon thread; the process waits for it at exit, bounded."""
    subscriber = _subscriber(flow_run)
    url = subscriber.get(which) if subscriber else None
    if subscriber is None or not isinstance(url, str):
        return

    def send() -> None:
        try:
            try:
                target = check_callback_url(url, list(subscriber.get("allow") or []))
            except CallbackURLError as err:
                LOGGER.warning("Job %s: %s callback refused: %s", flow_run.id, which, err)
                return
            if not send_callback(target, payload):
                LOGGER.warning(
                    "Job %s: %s callback to %s not delivered",
                    flow_run.id,
                    which,
                    display_url(url),
                )
        finally:
            with _pending_lock:
                _pending.discard(threading.current_thread())

    thread = threading.Thread(target=send, name=f"callback-{which}", daemon=True)
    with _pending_lock:
        if not _exit_hook:
            # Registered on first use, so that in a job's process it runs before the exit
            # hooks Prefect registered earlier (atexit runs the latest first).
            atexit.register(_wait_for_deliveries)
            _exit_hook.append(True)
        _pending.add(thread)
    try:
        thread.start()
    except RuntimeError:
        with _pending_lock:
            _pending.discard(thread)
        raise


def _wait_for_deliveries() -> None:
    """At exit: join the delivery threads still running, all within `DELIVERY_GRACE`."""
    deadline = time.monotonic() + DELIVERY_GRACE
    with _pending_lock:
        threads = list(_pending)
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    left = sum(thread.is_alive() for thread in threads)
    if left:
        LOGGER.warning(
            "%d callback(s) still being delivered after %g s; abandoned at exit",
            left,
            DELIVERY_GRACE,
        )


def _on_running(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    _deliver(flow_run, "inProgressUri", _status_info(flow_run, StatusCode.RUNNING, state.message))


def _on_completion(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    if _subscriber(flow_run) is None:
        return
    try:
        output = as_job_output(state.result(raise_on_failure=False))
    except Exception:
        LOGGER.exception("Job %s: results for the success callback", flow_run.id)
        return
    _deliver(flow_run, "successUri", output["value"])


def _on_failure(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    notify_failed(flow_run, state.message)


def notify_failed(flow_run: FlowRun, message: str | None) -> None:
    """Tell a job's subscriber that the job failed (also used when its process died).

    Args:
        flow_run: The job's flow run.
        message: Why it failed.
    """
    _deliver(flow_run, "failedUri", _status_info(flow_run, StatusCode.FAILED, message))


def attach_hooks(flow: Flow[..., Any]) -> Flow[..., Any]:
    """Add the callback hooks to a flow, in place and once.

    Args:
        flow: A job's flow.

    Returns:
        The same flow.
    """
    for hooks, hook in (
        (flow.on_running_hooks, _on_running),
        (flow.on_completion_hooks, _on_completion),
        (flow.on_failure_hooks, _on_failure),
        (flow.on_crashed_hooks, _on_failure),
    ):
        if hook not in hooks:
            hooks.append(hook)
    return flow
