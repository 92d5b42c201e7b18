"""Where job results live: Prefect result persistence in a storage block, as JSON.

Every job's flow persists its return value, a `JobOutput`, as a Prefect result record in
a storage block, with Prefect's JSON result serializer (`RESULT_SERIALIZER`); binary output
is stored as base64 text with its media type (`stored_output`). The completed state of the
flow run carries the record's metadata (storage block id and key), so any process that can
reach the Prefect API and the storage (the web server, another replica, a worker on another
host) can read it back.

What a flow run's state says about its result is not trusted: a result is read only from a
storage block this server configured (its default local block on `output_dir`, or a
`result_storage` slug), matched by block document id, and only when it was stored as JSON.
It is parsed with the standard `json` module alone: nothing stored is unpickled, and no
serializer, class or module named by the record is used. Deletion is limited the same way,
and, on a local file system, to paths inside the block's base path.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypedDict, cast

from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer
from prefect.settings import PREFECT_API_URL, temporary_settings

from pygeoapi_prefect._compat import ResultRecord, ResultRecordMetadata, call_sync
from pygeoapi_prefect.settings import ManagerSettings

__all__ = [
    "RESULT_SERIALIZER",
    "JobOutput",
    "ResultStorage",
    "ResultUnavailableError",
    "as_job_output",
    "make_private",
    "persist_output",
    "private_directory",
    "stored_output",
]

LOGGER = logging.getLogger(__name__)

RESULT_SERIALIZER = "json"
"""The result serializer of every job's flow (Prefect's JSON serializer): never pickle."""

_BASE64 = "base64"


class JobOutput(TypedDict):
    """What a job's flow returns and Prefect persists: pygeoapi's (mimetype, outputs)."""

    mimetype: str
    value: Any


def stored_output(output: JobOutput) -> dict[str, Any]:
    """Return a job output in the JSON form it is persisted in.

    Binary output becomes base64 text, marked `"encoding": "base64"`; any other value is
    kept as it is (it must be JSON).

    Args:
        output: The job's output.

    Returns:
        A JSON-serialisable mapping that `as_job_output` reads back.
    """
    value = output["value"]
    if isinstance(value, bytes | bytearray):
        encoded = base64.b64encode(bytes(value)).decode("ascii")
        return {"mimetype": output["mimetype"], "value": encoded, "encoding": _BASE64}
    return {"mimetype": output["mimetype"], "value": value}


def as_job_output(value: Any) -> JobOutput:
    """Read a flow's return value as a job output: JSON, unless it is a `JobOutput`.

    A `JobOutput` in its stored form (`stored_output`, binary as base64) is decoded.

    Args:
        value: What the job's flow returned, or what its result record holds.

    Returns:
        The job output.

    Raises:
        ValueError: When a stored binary output is not valid base64.
    """
    if isinstance(value, dict) and set(value) == {"mimetype", "value", "encoding"}:
        if value["encoding"] != _BASE64 or not isinstance(value["value"], str):
            raise ValueError(f"unknown output encoding {value['encoding']!r}")
        try:
            data = base64.b64decode(value["value"], validate=True)
        except binascii.Error as err:
            raise ValueError(f"the stored binary output is not base64: {err}") from err
        return JobOutput(mimetype=str(value["mimetype"]), value=data)
    if isinstance(value, dict) and set(value) == {"mimetype", "value"}:
        return JobOutput(mimetype=str(value["mimetype"]), value=value["value"])
    return JobOutput(mimetype="application/json", value=value)


def private_directory(directory: Path, setting: str = "server.manager.output_dir") -> Path:
    """Create a directory only this user can use (0700), or check an existing one.

    Args:
        directory: The directory.
        setting: The configuration setting that names it (for the error).

    Returns:
        The directory, resolved.

    Raises:
        ValueError: When it is not a directory, is owned by another user, or is writable
            by its group or by others; or when a directory above it is owned by another
            user (but root), or writable by others without the sticky bit (as `/tmp` has).
    """
    directory = directory.expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    resolved = directory.resolve()
    info = resolved.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{setting}: {resolved} is not a directory")
    if info.st_uid != os.geteuid():
        raise ValueError(
            f"{setting}: {resolved} is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}); job results must be in a directory of this user's own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(
            f"{setting}: {resolved} is writable by its group or by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); use a directory only this user can write "
            "(chmod 700)"
        )
    for parent in resolved.parents:  # whoever may rename a parent may swap the directory
        info = parent.stat()
        if info.st_uid not in (0, os.geteuid()):
            raise ValueError(
                f"{setting}: {resolved} is inside {parent}, which uid {info.st_uid} owns; "
                "use a directory of this user's own"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise ValueError(
                f"{setting}: {resolved} is inside {parent}, which others may write "
                f"(mode {stat.S_IMODE(info.st_mode):o}, no sticky bit); use a directory of "
                "this user's own"
            )
    return resolved


def persist_output(block: WritableFileSystem, output: JobOutput) -> ResultRecord[Any]:
    """Persist a job's output as a Prefect result record (JSON, binary as base64), 0600.

    Args:
        block: The saved storage block it goes to.
        output: The job's output.

    Returns:
        The record, whose metadata a COMPLETED state carries.
    """
    store = ResultStore(result_storage=block, serializer=JSONSerializer())
    record: ResultRecord[Any] = store.create_result_record(stored_output(output))
    store.persist_result_record(record)
    make_private(block, record.metadata.storage_key or "")
    return record


def make_private(block: WritableFileSystem, key: str) -> None:
    """Make a result file just written readable by this user only, where storage allows.

    Args:
        block: The storage block the result went to.
        key: The result's storage key.
    """
    path = _local_path(block, key)
    if path is None:
        return
    try:
        path.chmod(0o600)
    except OSError:
        LOGGER.warning("Could not make result file %s private", path, exc_info=True)


def _local_path(block: WritableFileSystem, key: str) -> Path | None:
    """The file of a key in a local block, when it lies inside the block's base path."""
    if not isinstance(block, LocalFileSystem) or not block.basepath:
        return None
    base = Path(block.basepath).expanduser().resolve()
    path = (base / key).resolve()
    return path if path.is_relative_to(base) and path != base else None


class ResultUnavailableError(Exception):
    """A finished job's result cannot be read (not persisted, storage gone, unreadable)."""


class ResultStorage:
    """Resolve the storage block for new results and read or delete stored ones.

    Constructing it creates the default local directory (`output_dir`, 0700) and checks
    that it belongs to this user, unless the manager's `result_storage` names a block.

    Args:
        settings: The manager settings (result storage slug or local directory).
        process_slugs: Returns the `result_storage` slugs of the configured processes.

    Raises:
        ValueError: When `output_dir` is not a private directory of this user.
    """

    def __init__(
        self,
        settings: ManagerSettings,
        process_slugs: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._settings = settings
        self._process_slugs = process_slugs
        self._default: WritableFileSystem | None = None
        self._trusted: dict[uuid.UUID, WritableFileSystem] = {}
        self._lock = threading.Lock()
        self._basepath: str | None = None
        if not settings.result_storage:
            self._basepath = str(private_directory(Path(settings.output_dir)))

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
                block = cast(WritableFileSystem, call_sync(Block.load, name))
            else:
                block = self._local_block()
            if slug is None:
                self._default = block
        return block

    def _local_block(self) -> LocalFileSystem:
        """The block of `output_dir`, saved (a write to the API) only when it changed."""
        basepath = cast(str, self._basepath)  # checked at construction: no result_storage
        block_name = self._settings.result_storage_slug.split("/", 1)[1]
        try:
            saved = cast(LocalFileSystem, call_sync(LocalFileSystem.load, block_name))
        except ValueError:  # not saved yet
            saved = None
        if saved is not None and saved.basepath == basepath:
            return saved
        local = LocalFileSystem(basepath=basepath)
        call_sync(local.save, block_name, overwrite=True)
        return local

    def _configured_slugs(self) -> set[str]:
        return {self._settings.result_storage_slug, *self._process_slugs()}

    def _load_trusted(self, client: SyncPrefectClient) -> dict[uuid.UUID, WritableFileSystem]:
        """The storage blocks this server configured, by block document id."""
        trusted: dict[uuid.UUID, WritableFileSystem] = {}
        api_url = str(client.api_url)
        for slug in sorted(self._configured_slugs()):
            block_type, _, name = slug.partition("/")
            try:
                document = client.read_block_document_by_name(name, block_type)
            except ObjectNotFound:
                continue  # not saved yet: no result can be stored in it
            if document.id is None:
                continue
            if slug == self._settings.result_storage_slug and self._basepath is not None:
                # The default block: the directory this server checked, whatever the saved
                # document says.
                trusted[document.id] = LocalFileSystem(basepath=self._basepath)
                continue
            try:
                with temporary_settings(updates={PREFECT_API_URL: api_url}):
                    block = call_sync(Block.load, slug)
            except (ValueError, ImportError, KeyError) as err:
                LOGGER.warning("Result storage %s cannot be loaded: %s", slug, err)
                continue
            if isinstance(block, WritableFileSystem):
                trusted[document.id] = block
        return trusted

    def _trusted_block(self, client: SyncPrefectClient, block_id: uuid.UUID) -> WritableFileSystem:
        """The configured storage block of a block document id (refused for any other)."""
        block = self._trusted.get(block_id)
        if block is None:  # a block saved since the last look, or one not configured here
            with self._lock:
                self._trusted = self._load_trusted(client)
            block = self._trusted.get(block_id)
        if block is None:
            raise ResultUnavailableError(
                f"the job's result is in storage block {block_id}, which this server does "
                "not use: it is not read"
            )
        return block

    @staticmethod
    def _metadata(state: State) -> ResultRecordMetadata:
        data = state.data
        if isinstance(data, ResultRecordMetadata):
            metadata = data
        elif isinstance(data, ResultRecord):
            metadata = data.metadata  # read back from storage like any other
        else:
            raise ResultUnavailableError("the job's result was not persisted")
        if metadata.storage_block_id is None or metadata.storage_key is None:
            raise ResultUnavailableError("the job's result has no storage block")
        return metadata

    def read(self, client: SyncPrefectClient, state: State) -> JobOutput:
        """Read the output a completed flow run persisted.

        Args:
            client: A Prefect client.
            state: The COMPLETED state of the job's flow run.

        Returns:
            The job's output.

        Raises:
            ResultUnavailableError: When the result cannot be found or read, was not
                stored as JSON, or is in a storage block this server did not configure.
        """
        metadata = self._metadata(state)
        serializer = getattr(metadata.serializer, "type", None)
        if serializer != RESULT_SERIALIZER:
            raise ResultUnavailableError(
                f"the job's result was stored with the {serializer!r} serializer: this "
                "server reads JSON results only"
            )
        block = self._trusted_block(client, cast(uuid.UUID, metadata.storage_block_id))
        key = cast(str, metadata.storage_key)
        try:
            content = cast(bytes, call_sync(block.read_path, key))
        except (OSError, ValueError) as err:
            raise ResultUnavailableError(f"the job's result cannot be read: {err}") from err
        return _parse_record(content)

    def delete(self, client: SyncPrefectClient, state: State) -> None:
        """Remove a finished job's stored result, where the storage allows it.

        Only a result in a storage block this server configured is removed, and in a local
        one only a file inside its base path.

        Args:
            client: A Prefect client.
            state: The final state of the job's flow run.
        """
        try:
            metadata = self._metadata(state)
            block = self._trusted_block(client, cast(uuid.UUID, metadata.storage_block_id))
        except ResultUnavailableError as err:
            LOGGER.info("No stored result removed: %s", err)
            return
        key = cast(str, metadata.storage_key)
        if isinstance(block, LocalFileSystem):
            path = _local_path(block, key)
            if path is None:
                LOGGER.warning("Result key %r is outside its storage: not removed", key)
                return
            path.unlink(missing_ok=True)
            return
        remover = getattr(block, "delete_path", None)
        if callable(remover):
            remover(key)
            return
        LOGGER.warning(
            "Result %s stays in %s: that storage cannot delete", key, type(block).__name__
        )


def _parse_record(content: bytes) -> JobOutput:
    """Parse a stored JSON result with the standard `json` module alone.

    A result file holds either a whole result record (metadata and the serialized result)
    or, where Prefect keeps the metadata apart, the serialized result alone; the record's
    metadata is checked to name the JSON serializer (the state's was checked already).
    """
    try:
        stored = json.loads(content)
        metadata = stored.get("metadata") if isinstance(stored, dict) else None
        if isinstance(metadata, dict) and set(stored) == {"metadata", "result"}:
            serializer = metadata.get("serializer")
            if not isinstance(serializer, dict) or serializer.get("type") != RESULT_SERIALIZER:
                raise ValueError("not a JSON result record")
            if not isinstance(stored["result"], str):
                raise ValueError("the record holds no JSON result")
            stored = json.loads(stored["result"])
        return as_job_output(stored)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError too
        raise ResultUnavailableError(f"the job's result cannot be read: {err}") from err
