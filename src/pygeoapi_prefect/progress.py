"""Progress of a running job: what a process reports and how the manager reads it back.

A process reports progress with `report_progress`, which keeps one Prefect progress
artifact per flow run up to date (the Prefect UI shows it on the flow-run page). The
manager reads the newest progress artifact of each running job it shows. Inside Prefect's
flow engine the job is the current flow run; a job run without the engine (`runtime.direct`)
names itself with `progress_of`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import cast

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.context import FlowRunContext

from pygeoapi_prefect._compat import call_sync

__all__ = ["progress_of", "read_progress", "report_progress"]

LOGGER = logging.getLogger(__name__)

_artifacts: dict[uuid.UUID, uuid.UUID] = {}
_lock = threading.Lock()
_direct_job: ContextVar[tuple[SyncPrefectClient, uuid.UUID] | None] = ContextVar(
    "pygeoapi_prefect_direct_job", default=None
)


@contextmanager
def progress_of(client: SyncPrefectClient, flow_run_id: uuid.UUID) -> Iterator[None]:
    """Make `report_progress` in this thread report for a job run without the flow engine.

    Args:
        client: A Prefect client.
        flow_run_id: The job's flow run.
    """
    token = _direct_job.set((client, flow_run_id))
    try:
        yield
    finally:
        _direct_job.reset(token)
        with _lock:
            _artifacts.pop(flow_run_id, None)


def report_progress(percent: float, message: str | None = None) -> None:
    """Report how far the current job has come.

    Call it from a process's `execute` method, or from a Prefect flow or task of a
    `BasePrefectProcessor`, while it runs as a job. Outside a job it only logs.

    Args:
        percent: Progress between 0 and 100 (clamped).
        message: A short message shown as the job's status message.

    Examples:
        ```python
        from pygeoapi_prefect import report_progress

        for i, tile in enumerate(tiles):
            process(tile)
            report_progress(100 * (i + 1) / len(tiles), f"tile {i + 1} of {len(tiles)}")
        ```
    """
    value = max(0.0, min(100.0, float(percent)))
    context = FlowRunContext.get()
    client: SyncPrefectClient | None = None  # None: Prefect's run-context helpers
    if context is not None and context.flow_run is not None:
        flow_run_id = context.flow_run.id
    elif (direct := _direct_job.get()) is not None:
        client, flow_run_id = direct
    else:
        LOGGER.info("progress %.0f%% %s (not in a job)", value, message or "")
        return
    with _lock:
        artifact_id = _artifacts.get(flow_run_id)
        if artifact_id is None:
            _artifacts[flow_run_id] = _create(client, flow_run_id, value, message)
            return
    if client is None:
        call_sync(update_progress_artifact, artifact_id, progress=value, description=message)
    else:
        client.update_artifact(artifact_id, ArtifactUpdate(data=value, description=message))


def _create(
    client: SyncPrefectClient | None, flow_run_id: uuid.UUID, value: float, message: str | None
) -> uuid.UUID:
    if client is None:
        # (Prefect's helper also links the artifact to the current task run, if any)
        created = call_sync(create_progress_artifact, progress=value, description=message)
        return cast(uuid.UUID, created)
    artifact = ArtifactCreate(
        type="progress", data=value, description=message, flow_run_id=flow_run_id
    )
    return client.create_artifact(artifact).id


def read_progress(
    client: SyncPrefectClient, flow_run_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, str | None]]:
    """Read the latest reported progress of several jobs in one query.

    Args:
        client: A Prefect client.
        flow_run_ids: The flow runs whose progress is wanted.

    Returns:
        For each flow run that reported progress: (percent, message).
    """
    ids = list(flow_run_ids)
    if not ids:
        return {}
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
        sort=ArtifactSort.UPDATED_DESC,
    )
    found: dict[uuid.UUID, tuple[int, str | None]] = {}
    for artifact in artifacts:
        if artifact.flow_run_id is None or artifact.flow_run_id in found:
            continue
        try:
            percent = round(float(artifact.data))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        found[artifact.flow_run_id] = (max(0, min(100, percent)), artifact.description)
    return found
