"""Where job results live: Prefect result persistence in a storage block.

Every job's flow persists its return value, a `JobOutput`, as a Prefect result record in
a storage block. The completed state of the flow run carries the record's metadata
(storage block id and key), so any process that can reach the Prefect API and the storage
(the web server, another replica, a worker on another host) can read it back.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any, TypedDict, cast

from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.results import ResultRecord, ResultRecordMetadata  # type: ignore[attr-defined]
from prefect.settings import PREFECT_API_URL, temporary_settings

from pygeoapi_prefect.settings import ManagerSettings

__all__ = ["JobOutput", "ResultStorage", "ResultUnavailableError", "as_job_output"]

LOGGER = logging.getLogger(__name__)


class JobOutput(TypedDict):
    """What a job's flow returns and Prefect persists: pygeoapi's (mimetype, outputs)."""

    mimetype: str
    value: Any


def as_job_output(value: Any) -> JobOutput:
    """Read a flow's return value as a job output: JSON, unless it is a `JobOutput`.

    Args:
        value: What the job's flow returned.

    Returns:
        The job output.
    """
    if isinstance(value, dict) and set(value) == {"mimetype", "value"}:
        return JobOutput(mimetype=str(value["mimetype"]), value=value["value"])
    return JobOutput(mimetype="application/json", value=value)


class ResultUnavailableError(Exception):
    """A finished job's result cannot be read (not persisted, storage gone, unreadable)."""


class ResultStorage:
    """Resolve the storage block for new results and read or delete stored ones.

    Args:
        settings: The manager settings (result storage slug or local directory).
    """

    def __init__(self, settings: ManagerSettings) -> None:
        self._settings = settings
        self._default: WritableFileSystem | None = None
        self._blocks: dict[uuid.UUID, WritableFileSystem] = {}
        self._lock = threading.Lock()

    def block_for(self, api_url: str, slug: str | None = None) -> WritableFileSystem:
        """Return the saved storage block new results go to.

        Args:
            api_url: The Prefect API holding the block documents.
            slug: A `block-type/name` slug that overrides the manager's storage.

        Returns:
            A storage block with a block document id, so that result metadata names it.
        """
        if slug is None and self._default is not None:
            return self._default
        with self._lock, temporary_settings(updates={PREFECT_API_URL: api_url}):
            if slug is None and self._default is not None:  # made while this thread waited
                return self._default
            block: WritableFileSystem
            name = slug or self._settings.result_storage
            if name:
                block = cast(WritableFileSystem, Block.load(name, _sync=True))  # type: ignore[call-arg]
            else:
                block = self._local_block()
            if slug is None:
                self._default = block
        return block

    def _local_block(self) -> LocalFileSystem:
        """The block of `output_dir`, saved (a write to the API) only when it changed."""
        directory = Path(self._settings.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        basepath = str(directory.resolve())
        block_name = self._settings.result_storage_slug.split("/", 1)[1]
        try:
            saved = cast(LocalFileSystem, LocalFileSystem.load(block_name, _sync=True))  # type: ignore[call-arg]
        except ValueError:  # not saved yet
            saved = None
        if saved is not None and saved.basepath == basepath:
            return saved
        local = LocalFileSystem(basepath=basepath)
        local.save(block_name, overwrite=True, _sync=True)  # type: ignore[call-arg]
        return local

    def _block(self, client: SyncPrefectClient, block_id: uuid.UUID) -> WritableFileSystem:
        block = self._blocks.get(block_id)
        if block is None:
            document = client.read_block_document(block_id)
            loaded = cast(WritableFileSystem, Block._from_block_document(document))
            self._blocks[block_id] = loaded
            return loaded
        return block

    @staticmethod
    def _metadata(state: State) -> ResultRecordMetadata:
        data = state.data
        if isinstance(data, ResultRecordMetadata):
            return data
        if isinstance(data, ResultRecord):
            return data.metadata
        raise ResultUnavailableError("the job's result was not persisted")

    def read(self, client: SyncPrefectClient, state: State) -> JobOutput:
        """Read the output a completed flow run persisted.

        Args:
            client: A Prefect client.
            state: The COMPLETED state of the job's flow run.

        Returns:
            The job's output.

        Raises:
            ResultUnavailableError: When the result cannot be found or read.
        """
        if isinstance(state.data, ResultRecord):
            return as_job_output(state.data.result)
        metadata = self._metadata(state)
        if metadata.storage_block_id is None or metadata.storage_key is None:
            raise ResultUnavailableError("the job's result has no storage block")
        try:
            block = self._block(client, metadata.storage_block_id)
            content = cast(bytes, block.read_path(metadata.storage_key, _sync=True))  # type: ignore[call-arg]
            record: ResultRecord[Any] = ResultRecord.deserialize(
                content, backup_serializer=metadata.serializer
            )
        except (ObjectNotFound, OSError, ValueError) as err:
            raise ResultUnavailableError(f"the job's result cannot be read: {err}") from err
        return as_job_output(record.result)

    def delete(self, client: SyncPrefectClient, state: State) -> None:
        """Remove a finished job's stored result, where the storage allows it.

        Args:
            client: A Prefect client.
            state: The final state of the job's flow run.
        """
        try:
            metadata = self._metadata(state)
        except ResultUnavailableError:
            return
        if metadata.storage_block_id is None or metadata.storage_key is None:
            return
        try:
            block = self._block(client, metadata.storage_block_id)
        except ObjectNotFound:
            return
        if isinstance(block, LocalFileSystem):
            path = Path(block._resolve_path(metadata.storage_key))
            path.unlink(missing_ok=True)
            return
        remover = getattr(block, "delete_path", None)
        if callable(remover):
            remover(metadata.storage_key)
            return
        LOGGER.warning(
            "Result %s stays in %s: that storage cannot delete",
            metadata.storage_key,
            type(block).__name__,
        )
