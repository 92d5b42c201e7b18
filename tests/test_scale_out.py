"""Scale-out: a Prefect server on PostgreSQL, a process worker, two pygeoapi replicas.

Jobs of deployed processes run on the worker, which writes their results to a shared
storage block that both pygeoapi replicas read. Needs PostgreSQL on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from click.testing import CliRunner
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL, temporary_settings

from pygeoapi_prefect.cli import cli
from pygeoapi_prefect.dedup import DEDUP_HEADER
from pygeoapi_prefect.jobs import process_tag
from tests.conftest import ROOT, TERMINAL, Server, free_port, wait_for, write_config

# (the first test's set-up migrates a new PostgreSQL database: minutes on a loaded machine)
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
PYGEOAPI_PREFECT = str(BIN / "pygeoapi-prefect")
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
HEARTBEAT_TIMEOUT = 40
"""Seconds without a heartbeat before a job is crashed: the 30 s heartbeats, plus slack."""


async def _postgres(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(**POSTGRES, database="postgres", timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _require_postgres() -> None:
    try:
        asyncio.run(_postgres("SELECT 1"))
    except Exception as err:  # asyncpg raises several kinds
        message = f"PostgreSQL is not reachable on 127.0.0.1:5432: {err!r}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _stop(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """Stop a process started in its own session, with its whole group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(grace)
        except ProcessLookupError:
            pass
    if process.poll() is None:
        process.kill()
        process.wait(grace)


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@dataclass
class Cluster:
    api_url: str
    work_pool: str
    results_dir: Path
    worker: subprocess.Popen[bytes]
    worker_log: Path
    a: Server
    b: Server
    worker_pids: set[int] = field(default_factory=set)

    @contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        with (
            temporary_settings(updates={PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def flow_run(self, job_id: str) -> FlowRun:
        with self.client() as client:
            return client.read_flow_run(uuid.UUID(job_id))

    def worker_descendants(self) -> set[int]:
        pids = _descendants(self.worker.pid)
        self.worker_pids |= pids
        return pids


def _start_prefect_server(
    home: Path, database: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PREFECT_") or key == "PREFECT_SERVER_ANALYTICS_ENABLED"
    }
    env.update(
        PREFECT_API_DATABASE_CONNECTION_URL=(
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        ),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    with log.open("ab") as out:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, timeout=90, interval=0.5, message="the Prefect server")
    return process, url


def _pygeoapi_config(directory: Path, work_pool: str) -> Path:
    directory.mkdir()
    path = write_config(
        directory, port=free_port(), prefect={"result_storage": "local-file-system/shared-results"}
    )
    config = yaml.safe_load(path.read_text())
    resources = config["resources"]
    resources["echo"]["processor"]["prefect"] = {
        "deployment": "pygeoapi-process/echo",
        "work_pool": work_pool,
    }
    resources["word-stats"]["processor"]["prefect"] = {
        "deployment": "word-stats/word-stats",
        "work_pool": work_pool,
        "dedup": True,
    }
    resources["echo-dedup"] = {
        "type": "process",
        "processor": {
            "name": "pygeoapi_prefect.examples.EchoProcessor",
            "prefect": {"dedup": True},
        },
    }
    resources["fail"]["processor"]["prefect"] = {
        "deployment": "pygeoapi-process/fail",
        "work_pool": work_pool,
        "retries": 1,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _require_postgres()
    tmp = tmp_path_factory.mktemp("scale-out")
    database = f"pgp_{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        asyncio.run(_postgres(f'CREATE DATABASE "{database}"'))
        stack.callback(
            lambda: asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        )

        server, api_url = _start_prefect_server(tmp / "prefect-home", database, tmp / "prefect.log")
        stack.callback(_stop, server, 30)

        work_pool = f"scale-out-{uuid.uuid4().hex[:8]}"
        results_dir = tmp / "shared-results"
        configs = [_pygeoapi_config(tmp / name, work_pool) for name in ("a", "b")]
        for directory in ("a", "b"):
            assert (tmp / directory / "pygeoapi-openapi.yml").exists()

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            with get_client(sync_client=True) as client:
                client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"))
            LocalFileSystem(basepath=str(results_dir)).save("shared-results")
            for process_id in ("echo", "word-stats", "fail"):
                result = CliRunner().invoke(
                    cli,
                    [
                        "deploy-process",
                        process_id,
                        "--pygeoapi-config",
                        str(configs[0]),
                        "--heartbeat-timeout",
                        str(HEARTBEAT_TIMEOUT),
                    ],
                    catch_exceptions=False,
                )
                assert result.exit_code == 0, result.output

        worker_log = tmp / "worker.log"
        with worker_log.open("ab") as out:
            worker = subprocess.Popen(
                [
                    PYGEOAPI_PREFECT,
                    "worker",
                    "--pygeoapi-config",
                    str(configs[0]),
                    "--work-pool",
                    work_pool,
                ],
                env={
                    **os.environ,
                    "PREFECT_API_URL": api_url,
                    "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PREFECT_HOME": str(tmp / "worker-home"),
                    "PYTHONPATH": str(ROOT),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        a = Server(configs[0], {"PREFECT_API_URL": api_url})
        b = Server(configs[1], {"PREFECT_API_URL": api_url})
        cluster = Cluster(api_url, work_pool, results_dir, worker, worker_log, a, b)
        # the flow-run processes a worker starts live in sessions of their own
        stack.callback(lambda: _kill_all(cluster.worker_pids))
        stack.callback(_stop, worker)
        stack.callback(cluster.worker_descendants)
        stack.callback(a.stop)
        stack.callback(b.stop)
        a.start()
        b.start()

        def worker_online() -> bool:
            if worker.poll() is not None:
                pytest.fail(f"the worker exited: {worker_log.read_text()[-3000:]}")
            with cluster.client() as client:
                return bool(client.read_workers_for_work_pool(work_pool))

        wait_for(worker_online, timeout=60, interval=0.5, message="the worker")
        yield cluster


def _execute(server: Server, process_id: str, inputs: dict[str, Any], **headers: str) -> Any:
    return httpx.post(
        f"{server.url}/processes/{process_id}/execution",
        json={"inputs": inputs},
        headers=headers,
        timeout=120,
    )


def _submit(server: Server, process_id: str, inputs: dict[str, Any]) -> str:
    response = _execute(server, process_id, inputs, Prefer="respond-async")
    assert response.status_code == 201, response.text
    return str(response.json()["jobID"])


def _job(server: Server, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/jobs/{job_id}", params={"f": "json"}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_status(server: Server, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    return wait_for(
        lambda: _job(server, job_id),
        lambda job: job["status"] in statuses,
        timeout,
        interval=0.25,
        message=f"job {job_id} to be {statuses}",
    )


def test_async_job_runs_on_the_worker_and_its_result_is_shared(cluster: Cluster) -> None:
    started = time.monotonic()
    job_id = _submit(cluster.a, "echo", {"echoInput": "scale-out"})
    job = _wait_status(cluster.a, job_id, TERMINAL, timeout=60)
    elapsed = time.monotonic() - started
    assert job["status"] == "successful", job
    print(f"\n[scale-out] echo submit -> successful through the worker: {elapsed:.2f} s")

    results = httpx.get(f"{cluster.a.url}/jobs/{job_id}/results", params={"f": "json"}, timeout=30)
    assert results.status_code == 200, results.text
    assert results.json() == {"id": "echoOutput", "value": "scale-out"}
    flow_run = cluster.flow_run(job_id)
    assert flow_run.deployment_id is not None
    assert flow_run.work_pool_name == cluster.work_pool
    # the worker wrote it into the shared block
    assert any(path.is_file() for path in cluster.results_dir.rglob("*"))


def test_retries_of_a_deployed_process_apply_to_its_jobs(cluster: Cluster) -> None:
    job_id = _submit(cluster.a, "fail", {"message": "fails-twice"})
    job = _wait_status(cluster.a, job_id, TERMINAL, timeout=120)
    assert job["status"] == "failed", job
    assert "fails-twice" in job["message"]
    with cluster.client() as client:
        flow_run = client.read_flow_run(uuid.UUID(job_id))
    assert flow_run.empirical_policy.retries == 1
    assert flow_run.run_count == 2, "the job ran once more after failing"


def test_sync_job_on_the_other_replica(cluster: Cluster) -> None:
    started = time.monotonic()
    response = _execute(cluster.b, "echo", {"echoInput": "sync on b"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "echoOutput", "value": "sync on b"}
    print(f"\n[scale-out] sync echo on replica B through the worker: {elapsed:.2f} s")


def test_both_replicas_list_the_same_jobs(cluster: Cluster) -> None:
    listings = [
        httpx.get(f"{server.url}/jobs", params={"f": "json", "limit": 100}, timeout=30).json()
        for server in (cluster.a, cluster.b)
    ]
    ids = [{job["jobID"] for job in listing["jobs"]} for listing in listings]
    assert len(ids[0]) >= 2
    assert ids[0] == ids[1]


def test_prefect_processor_runs_through_its_deployment(cluster: Cluster) -> None:
    job_id = _submit(cluster.b, "word-stats", {"text": "the cat and the hat", "top": 2})
    job = _wait_status(cluster.b, job_id, TERMINAL, timeout=60)
    assert job["status"] == "successful", job
    results = httpx.get(f"{cluster.a.url}/jobs/{job_id}/results", params={"f": "json"}, timeout=30)
    assert results.status_code == 200, results.text
    assert results.json() == {
        "words": 5,
        "distinct": 4,
        "top": [{"word": "the", "count": 2}, {"word": "and", "count": 1}],
    }
    flow_run = cluster.flow_run(job_id)
    assert flow_run.parameters["job_id"] == job_id
    assert flow_run.deployment_id is not None


def _running_job(cluster: Cluster, server: Server) -> tuple[str, set[int]]:
    """Start a long echo job; return its id and the worker processes that run it."""
    before = cluster.worker_descendants()
    job_id = _submit(server, "echo", {"echoInput": "never", "pause": 60})
    _wait_status(server, job_id, {"running"}, timeout=60)
    flow_processes = wait_for(
        lambda: cluster.worker_descendants() - before,
        timeout=10,
        interval=0.25,
        message="the job's processes",
    )
    return job_id, set(flow_processes)


def test_dismiss_stops_the_job_on_the_worker(cluster: Cluster) -> None:
    job_id, processes = _running_job(cluster, cluster.a)

    started = time.monotonic()
    response = httpx.delete(f"{cluster.b.url}/jobs/{job_id}", params={"f": "json"}, timeout=60)
    answered = time.monotonic() - started
    assert response.status_code == 200, response.text
    _wait_status(cluster.a, job_id, {"dismissed"}, timeout=20)
    dismissed = time.monotonic() - started
    wait_for(
        lambda: not _alive(processes),
        timeout=20,
        interval=0.25,
        message="the job's processes to stop",
    )
    stopped = time.monotonic() - started
    print(
        f"\n[scale-out] dismiss on the worker: DELETE answered in {answered:.2f} s, job "
        f"dismissed after {dismissed:.2f} s, its processes gone after {stopped:.2f} s"
    )
    assert cluster.flow_run(job_id).state_type == StateType.CANCELLED
    # The job does not flip later: its processes, the only ones that could complete it,
    # have ended (waited for above); Prefect refuses a worker's CRASHED on a CANCELLED run.
    with cluster.client() as client:
        states = client.read_flow_run_states(uuid.UUID(job_id))
    assert StateType.COMPLETED not in {state.type for state in states}
    assert _job(cluster.b, job_id)["status"] == "dismissed"


@pytest.mark.parametrize(
    ("process_id", "inputs"),
    [
        ("echo-dedup", {"echoInput": "race"}),  # each replica's embedded runner
        ("word-stats", {"text": "race race", "top": 1}),  # the deployment, on the worker
    ],
)
def test_identical_submissions_to_two_replicas_at_once_make_one_run(
    cluster: Cluster, process_id: str, inputs: dict[str, Any]
) -> None:
    def run_ids() -> set[str]:
        with cluster.client() as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[process_tag(process_id)])
                ),
                limit=200,
            )
        return {str(run.id) for run in runs}

    before = run_ids()
    inputs = {**inputs, "text" if "text" in inputs else "echoInput": f"race {uuid.uuid4().hex}"}
    requests = 8
    start = threading.Barrier(requests)

    def submit(index: int) -> httpx.Response:
        start.wait()
        return _execute(
            (cluster.a, cluster.b)[index % 2], process_id, inputs, Prefer="respond-async"
        )

    with ThreadPoolExecutor(requests) as pool:
        responses = list(pool.map(submit, range(requests)))
    assert all(response.status_code == 201 for response in responses), [
        response.text for response in responses
    ]
    [job_id] = {response.json()["jobID"] for response in responses}
    assert run_ids() - before == {job_id}
    assert sum(DEDUP_HEADER in response.headers for response in responses) == requests - 1
    for server in (cluster.a, cluster.b):
        assert _wait_status(server, job_id, TERMINAL, timeout=60)["status"] == "successful"
    assert run_ids() - before == {job_id}


def test_a_job_whose_worker_dies_ends_crashed(cluster: Cluster) -> None:
    """The worker's machine is lost: its heartbeats stop, the automation crashes the job.

    (Last in this module: the cluster's worker stays dead.)
    """
    job_id, processes = _running_job(cluster, cluster.a)
    # The process worker starts each flow run in a session of its own, so a group kill
    # of the worker would leave the job running: kill everything it started.
    family = processes | cluster.worker_descendants()
    killed = time.monotonic()
    os.killpg(cluster.worker.pid, signal.SIGKILL)
    _kill_all(family)
    cluster.worker.wait(10)
    wait_for(
        lambda: not _alive(family), timeout=10, interval=0.25, message="the job's processes to die"
    )

    job = _wait_status(cluster.b, job_id, TERMINAL, timeout=HEARTBEAT_TIMEOUT + 40)
    elapsed = time.monotonic() - killed
    print(f"\n[scale-out] job of a killed worker failed after {elapsed:.2f} s")
    assert job["status"] == "failed", job
    flow_run = cluster.flow_run(job_id)
    assert flow_run.state_type == StateType.CRASHED
    assert "heartbeat" in str(flow_run.state.message if flow_run.state else "")
