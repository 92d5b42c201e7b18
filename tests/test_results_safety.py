"""Stored results are data, never code (issue 10, finding 2).

A result is read only when stored as JSON in a storage block this server configured, and
parsed with the standard `json` module; anything else reads as "no readable result" (a JSON
4xx). Deletion stays inside the server's own storage.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultRecord, ResultRecordMetadata  # type: ignore[attr-defined]
from prefect.serializers import JSONSerializer, PickleSerializer, Serializer
from prefect.states import Completed

from pygeoapi_prefect import PrefectManager
from pygeoapi_prefect.jobs import JOB_TAG, process_tag, server_tag
from pygeoapi_prefect.results import private_directory
from pygeoapi_prefect.settings import ManagerSettings
from tests.conftest import (
    ROOT,
    Server,
    free_port,
    submit,
    wait_for,
    wait_until_final,
    write_config,
)
from tests.processes import PAYLOAD


class _Payload:
    """An object whose unpickling creates a directory: proof that it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def prefect() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "unpickled"
    yield path
    assert not path.exists(), "a stored result was unpickled"


def _pickled_record(marker: Path, key: str, block_id: uuid.UUID | None) -> bytes:
    """A result file as Prefect's pickle serializer writes it, holding the payload."""
    metadata = ResultRecordMetadata(
        storage_key=key, serializer=PickleSerializer(), storage_block_id=block_id
    )
    return ResultRecord(metadata=metadata, result=_Payload(marker)).serialize()


def _json_record(value: Any, key: str, block_id: uuid.UUID | None) -> bytes:
    metadata = ResultRecordMetadata(
        storage_key=key, serializer=JSONSerializer(), storage_block_id=block_id
    )
    return ResultRecord(metadata=metadata, result=value).serialize()


def _result_file(prefect: SyncPrefectClient, manager: PrefectManager, job_id: str) -> Path:
    state = prefect.read_flow_run(uuid.UUID(job_id)).state
    assert state is not None
    assert isinstance(state.data, ResultRecordMetadata)
    assert state.data.storage_key is not None
    return Path(manager.settings.output_dir).resolve() / state.data.storage_key


def _assert_no_result(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json["type"] == "ResultNotAvailable"


def _forged_job(
    prefect: SyncPrefectClient,
    block_id: uuid.UUID | None,
    key: str,
    serializer: Serializer[Any],
    server: str | None = None,
) -> str:
    """A flow run made straight in the Prefect API to look like a finished echo job.

    It carries the tags of a job of the server whose `server_label` is `server` (the
    session's app's by default): anyone who can write to the API can forge them.
    """
    if server is None:
        from pygeoapi.flask_app import api_

        server = api_.manager.settings.server_label

    @flow(name="forged-job")
    def forged() -> None:
        """Never run."""

    metadata = ResultRecordMetadata(
        storage_key=key, serializer=serializer, storage_block_id=block_id
    )
    record: ResultRecord[None] = ResultRecord(metadata=metadata, result=None)
    record.mark_persisted()  # so that the client sends its metadata as the state's data
    run = prefect.create_flow_run(
        forged, tags=[JOB_TAG, server_tag(str(server)), process_tag("echo")]
    )
    prefect.set_flow_run_state(run.id, Completed(data=record), force=True)
    forged_state = prefect.read_flow_run(run.id).state
    assert forged_state is not None
    assert forged_state.data == metadata, "the forged state names the block and serializer"
    return str(run.id)


def _foreign_block(directory: Path) -> uuid.UUID:
    directory.mkdir(exist_ok=True)
    return LocalFileSystem(
        basepath=str(directory)
    ).save(  # type: ignore[no-any-return]
        f"elsewhere-{uuid.uuid4().hex[:8]}", _sync=True
    )


def _own_block_id(prefect: SyncPrefectClient, manager: PrefectManager) -> uuid.UUID:
    block_type, _, name = manager.settings.result_storage_slug.partition("/")
    document = prefect.read_block_document_by_name(name, block_type)
    assert document.id is not None
    return document.id


# -- repro (a): a result file overwritten with a pickle ------------------------------------


@pytest.mark.parametrize(
    ("process_id", "inputs"),
    [("echo", {"echoInput": "x"}), ("word-stats", {"text": "a b a"})],
    ids=["direct", "flow-engine"],
)
def test_an_overwritten_result_file_is_never_unpickled(
    client: Any,
    manager: PrefectManager,
    prefect: SyncPrefectClient,
    marker: Path,
    process_id: str,
    inputs: dict[str, Any],
) -> None:
    job_id = submit(client, process_id, inputs)
    assert wait_until_final(client, job_id)["status"] == "successful"
    assert client.get(f"/jobs/{job_id}/results?f=json").status_code == 200
    path = _result_file(prefect, manager, job_id)
    wait_for(  # the flow engine's completion hook makes it private just after COMPLETED
        lambda: {"mode": stat.S_IMODE(path.stat().st_mode)}, lambda file: file["mode"] == 0o600
    )
    path.write_bytes(_pickled_record(marker, path.name, None))
    _assert_no_result(client.get(f"/jobs/{job_id}/results?f=json"))
    state = prefect.read_flow_run(uuid.UUID(job_id)).state
    assert state is not None
    assert isinstance(state.data, ResultRecordMetadata)
    assert state.data.serializer.type == "json", "stored as JSON, not pickle"


# -- repro (b): a run forged through the Prefect API ---------------------------------------


@pytest.mark.parametrize("storage", ["foreign block", "own block"])
def test_a_forged_pickle_result_is_never_unpickled(
    client: Any,
    manager: PrefectManager,
    prefect: SyncPrefectClient,
    marker: Path,
    tmp_path: Path,
    storage: str,
) -> None:
    submit(client, "hello-world", {"name": "x"})  # the server's own block is saved
    if storage == "foreign block":
        directory = tmp_path / "elsewhere"
        block_id = _foreign_block(directory)
    else:
        directory = Path(manager.settings.output_dir).resolve()
        block_id = wait_for(lambda: {"id": _own_block_id(prefect, manager)}, lambda found: True)[
            "id"
        ]
    key = f"forged-{uuid.uuid4().hex}"
    (directory / key).write_bytes(_pickled_record(marker, key, block_id))
    job_id = _forged_job(prefect, block_id, key, PickleSerializer())
    _assert_no_result(client.get(f"/jobs/{job_id}/results?f=json"))


class _FullServer(Server):
    """`pygeoapi-prefect serve`: full conformance mode, its own result route."""

    def command(self) -> list[str]:
        cli = str(Path(sys.executable).parent / "pygeoapi-prefect")
        return [cli, "serve", "--pygeoapi-config", str(self.config)]


def test_full_mode_refuses_a_forged_pickle_result(
    prefect: SyncPrefectClient, prefect_api: str, marker: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "elsewhere"
    block_id = _foreign_block(directory)
    (directory / "forged").write_bytes(_pickled_record(marker, "forged", block_id))
    config = write_config(tmp_path, port=free_port())
    manager_def = yaml.safe_load(config.read_text())["server"]["manager"]
    server_label = ManagerSettings.from_manager_def(manager_def).server_label
    job_id = _forged_job(prefect, block_id, "forged", PickleSerializer(), server_label)
    server = _FullServer(config, {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)})
    server.start()
    try:
        response = httpx.get(f"{server.url}/jobs/{job_id}/results", timeout=30)
    finally:
        server.stop()
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")


def test_a_json_result_in_a_block_the_server_did_not_configure_is_refused(
    client: Any, prefect: SyncPrefectClient, tmp_path: Path
) -> None:
    directory = tmp_path / "elsewhere"
    block_id = _foreign_block(directory)
    key = "planted"
    (directory / key).write_bytes(_json_record({"planted": True}, key, block_id))
    job_id = _forged_job(prefect, block_id, key, JSONSerializer())
    _assert_no_result(client.get(f"/jobs/{job_id}/results?f=json"))


# -- deletion stays inside the server's storage --------------------------------------------


@pytest.mark.parametrize("storage", ["foreign block", "own block, key outside"])
def test_delete_never_unlinks_outside_the_result_directory(
    client: Any,
    manager: PrefectManager,
    prefect: SyncPrefectClient,
    tmp_path: Path,
    storage: str,
) -> None:
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    victim.write_text("keep me")
    if storage == "foreign block":
        block_id, key = _foreign_block(victim.parent), victim.name
    else:
        submit(client, "hello-world", {"name": "x"})
        block_id = wait_for(lambda: {"id": _own_block_id(prefect, manager)}, lambda found: True)[
            "id"
        ]
        key = str(victim)
    job_id = _forged_job(prefect, block_id, key, JSONSerializer())
    response = client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.data
    assert victim.read_text() == "keep me"


def test_delete_removes_the_servers_own_result_file(
    client: Any, manager: PrefectManager, prefect: SyncPrefectClient
) -> None:
    job_id = submit(client, "echo", {"echoInput": "x"})
    assert wait_until_final(client, job_id)["status"] == "successful"
    path = _result_file(prefect, manager, job_id)
    assert path.exists()
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert not path.exists()


# -- binary outputs, stored as JSON --------------------------------------------------------


def test_binary_output_is_stored_as_base64_json_in_a_private_file(
    client: Any, manager: PrefectManager, prefect: SyncPrefectClient
) -> None:
    job_id = submit(client, "binary", {"size": 300})
    assert wait_until_final(client, job_id)["status"] == "successful"
    results = client.get(f"/jobs/{job_id}/results")
    assert results.status_code == 200
    assert results.headers["Content-Type"] == "application/octet-stream"
    assert results.data == (PAYLOAD * 2)[:300]
    path = _result_file(prefect, manager, job_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "the result file is private"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    record = json.loads(path.read_bytes())
    assert record["metadata"]["serializer"]["type"] == "json"
    stored = json.loads(record["result"])
    assert stored["mimetype"] == "application/octet-stream"
    assert stored["encoding"] == "base64"
    assert base64.b64decode(stored["value"]) == (PAYLOAD * 2)[:300]


def test_binary_output_round_trips_through_the_flow_engine(
    server_factory: Any, prefect_api: str
) -> None:
    server = server_factory(
        env={"PREFECT_API_URL": prefect_api}, prefect={"direct_execution": False}
    )
    server.start()
    response = httpx.post(
        f"{server.url}/processes/binary/execution", json={"inputs": {"size": 1000}}, timeout=120
    )
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.content == (PAYLOAD * 4)[:1000]
    location = httpx.post(
        f"{server.url}/processes/binary/execution",
        json={"inputs": {"size": 300}},
        headers={"Prefer": "respond-async"},
        timeout=60,
    ).headers["Location"]
    wait_for(
        lambda: httpx.get(location, params={"f": "json"}, timeout=30).json(),
        lambda job: job["status"] == "successful",
        timeout=120,
    )
    results = httpx.get(f"{location}/results", timeout=30)
    assert results.headers["Content-Type"] == "application/octet-stream"
    assert results.content == (PAYLOAD * 2)[:300]


# -- output_dir: this user's own -----------------------------------------------------------


def _manager(output_dir: Path) -> PrefectManager:
    return PrefectManager(
        {"name": "x", "connection": "http://127.0.0.1:9/api", "output_dir": str(output_dir)}
        | {"processes": {}}
    )


def test_output_dir_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "results"
    _manager(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_group_or_world_writable_output_dir_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ValueError, match=r"server\.manager\.output_dir.*writable"):
        _manager(directory)


def test_an_output_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        directory = tmp_path / "theirs"
        directory.mkdir(mode=0o700)
        os.chown(directory, 65534, 65534)
    else:
        directory = Path("/usr")  # root's
    with pytest.raises(ValueError, match=r"server\.manager\.output_dir.*owned by uid"):
        private_directory(directory)


def test_an_output_dir_inside_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ValueError, match=r"server\.manager\.output_dir.*inside.*no sticky"):
        _manager(shared / "results")
    shared.chmod(0o1777)  # like /tmp: others cannot rename what is not theirs
    _manager(shared / "results")
