"""Where a job runs when no deployment is configured: a child of the pygeoapi process.

Each job is a Prefect flow run executed by Prefect's own flow engine in a process of its
own, forked from a warm launcher (`launcher`, Prefect and pygeoapi already imported),
so a job starts in milliseconds instead of the second a fresh interpreter needs, and it
can be stopped for real by killing its process group. Prefect stays the engine: the flow
run's state, logs and result live in the Prefect API, and the runner only starts, watches
and stops processes, as a Prefect runner or worker does:

- a job whose flow run is set to CANCELLING (by any pygeoapi replica) is killed and
  marked CANCELLED;
- a job whose process dies before reaching a final state is marked CRASHED;
- `recover` (at start, then every `recovery_interval`) takes over the jobs a stopped web
  server left behind on this host: never-started jobs are started, jobs whose process is
  gone are marked CRASHED, and jobs whose process still runs are adopted: they report
  their own outcome (the embedded API comes back at the address they know), and when
  dismissed (`dismiss_orphan`, or CANCELLING set by a replica) their process is stopped
  here and they end CANCELLED.

Each embedded job's flow run is labelled with the web server that runs it
(`pygeoapi.runner`: host and pid) and, once started, with its own process id
(`pygeoapi.job-pid`), so that a later server on the same host can tell what is orphaned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.filesystems import WritableFileSystem
from prefect.states import Cancelled, Crashed

from pygeoapi_prefect.connection import PrefectConnection
from pygeoapi_prefect.settings import ProcessSettings
from pygeoapi_prefect.subscriber import notify_failed

__all__ = ["EmbeddedRunner", "JobLaunch"]

LOGGER = logging.getLogger(__name__)

_CANCEL_POLL_SECONDS = 0.5
_LABEL_PID_AFTER_SECONDS = 2.0

LABEL_RUNNER = "pygeoapi.runner"
"""Flow-run label naming the web server (`host:pid`) whose runner runs an embedded job."""

LABEL_JOB_PID = "pygeoapi.job-pid"
"""Flow-run label holding the process id of an embedded job's process."""


def runner_id() -> str:
    """This process's runner label value: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _job_process(pid: int) -> bool:
    """Whether `pid` is (still) a live job process, not a reused pid.

    A job process leads its own process group and was forked from a launcher (checked
    where `/proc` tells).
    """
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # (no /proc here: trust the group check)
    except OSError:
        return False
    return b"pygeoapi_prefect.runtime.launcher" in command  # (a zombie's is empty)


def _orphaned(flow_run: FlowRun, host: str) -> bool:
    """Whether an embedded job's web server was on `host` and is gone (not this one)."""
    runner = str((flow_run.labels or {}).get(LABEL_RUNNER, ""))
    runner_host, _, runner_pid = runner.rpartition(":")
    if runner_host != host or not runner_pid.isdigit():
        return False
    return runner != runner_id() and not _pid_alive(int(runner_pid))


def _job_pid(flow_run: FlowRun) -> int | None:
    """The labelled process id of a job, if that process still runs the job."""
    job_pid = (flow_run.labels or {}).get(LABEL_JOB_PID)
    return job_pid if isinstance(job_pid, int) and _job_process(job_pid) else None


@dataclass(frozen=True)
class JobLaunch:
    """Everything a job process needs to run one job."""

    flow_run: FlowRun
    process_id: str
    processor_def: dict[str, Any]
    settings: ProcessSettings
    result_storage: WritableFileSystem
    direct: bool = False
    """Run without Prefect's flow engine (see `direct`)."""


@dataclass
class _Job:
    launch: JobLaunch
    launcher: _Launcher | None = None
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    started_at: float = 0.0
    pid_labelled: bool = False
    exit_code: int | None = None
    cancel_requested: bool = False


class _Launcher:
    """The launcher process and the two pipes to it.

    The process starts (importing Prefect and pygeoapi) before `api` is asked for the API
    URL and auth string, so that its start overlaps the embedded API's; `ready` is set once
    it can fork jobs.
    """

    def __init__(self, api: Callable[[], tuple[str, str | None]]) -> None:
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pygeoapi_prefect.runtime.launcher",
                str(command_read),
                str(event_write),
            ],
            pass_fds=(command_read, event_write),
            stdin=subprocess.DEVNULL,
        )
        os.close(command_read)
        os.close(event_write)
        self.commands = Connection(command_write, readable=False)
        self.events = Connection(event_read, writable=False)
        self.ready = threading.Event()
        try:
            url, auth_string = api()
        except BaseException:
            self.close()  # (the launcher exits when its command pipe closes)
            self.events.close()
            raise
        init = {"sys_path": list(sys.path), "api_url": url, "auth_string": auth_string}
        self.commands.send(("init", init))

    def close(self) -> None:
        self.commands.close()


class EmbeddedRunner:
    """Runs jobs in processes forked by a launcher, and watches them.

    At most `max_running` job processes run at once, like a Prefect runner's process
    limit, and at most a process's `concurrency_limit` of its jobs: a job beyond them stays
    SCHEDULED in Prefect (accepted) until a process ends.

    Args:
        connection: The manager's Prefect connection.
        cancel_grace: Seconds between SIGTERM and SIGKILL when a job is stopped.
        max_running: The most job processes at once.
    """

    def __init__(
        self, connection: PrefectConnection, cancel_grace: float = 2.0, max_running: int = 4
    ) -> None:
        self._connection = connection
        self._cancel_grace = cancel_grace
        self._max_running = max_running
        self._jobs: dict[uuid.UUID, _Job] = {}
        self._waiting: deque[uuid.UUID] = deque()
        self._running = 0
        self._lock = threading.Lock()
        self._launcher: _Launcher | None = None
        connection.on_moved(self._api_moved)

    def _api_moved(self, api_url: str) -> None:
        """New jobs start in a new launcher, pointed at the API's new address."""
        with self._lock:
            launcher, self._launcher = self._launcher, None
        if launcher is not None:
            LOGGER.warning("Jobs now start against the Prefect API at %s", api_url)
            launcher.close()

    def _api(self) -> tuple[str, str | None]:
        """The API URL and auth string a new launcher hands its job processes."""
        url = self._connection.api_url  # (resolving it sets the embedded API's auth string)
        return url, self._connection.auth_string

    def _ensure_launcher(self) -> _Launcher:
        if self._launcher is None or self._launcher.process.poll() is not None:
            launcher = _Launcher(self._api)
            self._launcher = launcher
            threading.Thread(
                target=self._listen, args=(launcher,), name="pygeoapi-prefect-events", daemon=True
            ).start()
            threading.Thread(
                target=self._watch_cancellations,
                args=(launcher,),
                name="pygeoapi-prefect-cancel",
                daemon=True,
            ).start()
        return self._launcher

    def warm_up(self, wait: float = 0) -> bool:
        """Start the launcher now, so that the first job does not wait for it.

        Args:
            wait: Seconds to wait until it can fork jobs (0: return at once).

        Returns:
            True if it is ready within `wait`.
        """
        with self._lock:
            launcher = self._ensure_launcher()
        return launcher.ready.wait(wait) if wait else launcher.ready.is_set()

    def start(self, launch: JobLaunch) -> None:
        """Run a job's flow run in a process of its own, now or when a process ends.

        Args:
            launch: The job to run.
        """
        with self._lock:
            self._jobs[launch.flow_run.id] = _Job(launch=launch)
            self._waiting.append(launch.flow_run.id)
            self._dispatch()

    def _dispatch(self) -> None:
        """Fork waiting jobs, oldest first, while limits allow (called with the lock held)."""
        running_per_process: dict[str, int] = {}
        for running in self._jobs.values():
            if running.launcher is not None:
                process_id = running.launch.process_id
                running_per_process[process_id] = running_per_process.get(process_id, 0) + 1
        still_waiting: deque[uuid.UUID] = deque()
        while self._waiting:
            run_id = self._waiting.popleft()
            job = self._jobs.get(run_id)
            if job is None:
                continue
            process_id = job.launch.process_id
            limit = job.launch.settings.concurrency_limit
            busy = limit is not None and running_per_process.get(process_id, 0) >= limit
            if busy or self._running >= self._max_running:
                still_waiting.append(run_id)
                continue
            launcher = self._ensure_launcher()
            job.launcher = launcher
            self._running += 1
            running_per_process[process_id] = running_per_process.get(process_id, 0) + 1
            launcher.commands.send(("run", job.launch))
        self._waiting = still_waiting

    def owns(self, flow_run_id: uuid.UUID) -> bool:
        """Whether the job runs in a process started by this runner."""
        with self._lock:
            return flow_run_id in self._jobs

    def wait(self, flow_run_id: uuid.UUID, timeout: float) -> bool:
        """Wait until a job's outcome is recorded in Prefect.

        Args:
            flow_run_id: The job.
            timeout: Seconds to wait at most.

        Returns:
            True if the job's flow engine finished (or its process ended) in time.
        """
        with self._lock:
            job = self._jobs.get(flow_run_id)
        return True if job is None else job.finished.wait(timeout)

    def cancel(self, flow_run_id: uuid.UUID) -> bool:
        """Stop a job of this runner now and mark its flow run CANCELLED.

        Args:
            flow_run_id: The job.

        Returns:
            True if the job ran here and was stopped, False if it is not this runner's.
        """
        with self._lock:
            job = self._jobs.get(flow_run_id)
            if job is None:
                return False
            job.cancel_requested = True
            waiting = job.launcher is None
            if waiting:
                self._waiting.remove(flow_run_id)
        if waiting:
            self._finish(flow_run_id, job)
            return True
        job.started.wait(10)
        if job.pid is not None:
            self._kill(job)
        job.done.wait(10)
        return True

    def _kill(self, job: _Job) -> None:
        assert job.pid is not None
        for sig, grace in ((signal.SIGTERM, self._cancel_grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(job.pid, sig)
            except ProcessLookupError:
                try:  # killed before it made its own process group
                    os.kill(job.pid, sig)
                except ProcessLookupError:
                    return
            if job.done.wait(grace):
                return

    def _listen(self, launcher: _Launcher) -> None:
        """Follow the launcher's reports until it goes away."""
        while True:
            try:
                kind, run_id, value = launcher.events.recv()
            except (EOFError, OSError):
                break
            if kind == "ready":
                launcher.ready.set()
                continue
            with self._lock:
                job = self._jobs.get(run_id)
            if job is None:
                continue
            if kind == "started":
                job.pid = value
                job.started_at = time.monotonic()
                job.started.set()
            elif kind == "finished":
                job.finished.set()
            elif kind == "exited":
                job.exit_code = value
                self._finish(run_id, job)
        with self._lock:
            orphans = [
                (run_id, job) for run_id, job in self._jobs.items() if job.launcher is launcher
            ]
        for run_id, job in orphans:
            job.exit_code = job.exit_code if job.exit_code is not None else -1
            job.started.set()
            self._finish(run_id, job)

    def _label_pid(self, run_id: uuid.UUID, pid: int) -> None:
        try:
            self._connection.client.update_flow_run_labels(run_id, {LABEL_JOB_PID: pid})
        except Exception:
            LOGGER.warning("Could not label job %s with its process id", run_id, exc_info=True)

    def recover(
        self, launch_for: Callable[[FlowRun], JobLaunch | None], jobs: FlowRunFilterTags
    ) -> None:
        """Take over the embedded jobs that a stopped web server on this host left behind.

        Args:
            launch_for: How to run a job again (None when its process is not configured).
            jobs: The tags of this server's jobs (another server's are never touched).
        """
        host = socket.gethostname()
        client = self._connection.client
        orphans = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=jobs,
                deployment_id=FlowRunFilterDeploymentId(is_null_=True),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(
                        any_=[
                            StateType.SCHEDULED,
                            StateType.PENDING,
                            StateType.RUNNING,
                            StateType.CANCELLING,
                        ]
                    )
                ),
            )
        )
        for flow_run in orphans:
            if not _orphaned(flow_run, host):
                continue
            job_pid = _job_pid(flow_run)
            if job_pid is None:
                self._take_over(flow_run, launch_for)
            elif flow_run.state_type == StateType.CANCELLING:
                self._stop_orphan(flow_run, job_pid)
            # else adopted: still running, it records its outcome itself

    def dismiss_orphan(self, flow_run: FlowRun) -> bool:
        """Dismiss a job whose web server on this host is gone: stop it, end it CANCELLED.

        Args:
            flow_run: The job's flow run (not final).

        Returns:
            True if it was such a job and is now CANCELLED; False if it has a live owner
            (or one this host cannot check), who stops it.
        """
        if flow_run.deployment_id is not None or not _orphaned(flow_run, socket.gethostname()):
            return False
        self._stop_orphan(flow_run, _job_pid(flow_run))
        return True

    def _stop_orphan(self, flow_run: FlowRun, job_pid: int | None) -> None:
        """Stop an orphaned job's process group (SIGTERM, then SIGKILL) and mark it CANCELLED."""
        if job_pid is not None:
            LOGGER.info("Stopping job %s, left running by a stopped pygeoapi process", flow_run.id)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job_pid, sig)
                deadline = time.monotonic() + self._cancel_grace
                while _job_process(job_pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _job_process(job_pid):
                    break
        self._connection.client.set_flow_run_state(
            flow_run.id, Cancelled(message="Job dismissed"), force=True
        )

    def _take_over(
        self, flow_run: FlowRun, launch_for: Callable[[FlowRun], JobLaunch | None]
    ) -> None:
        client = self._connection.client
        state_type = flow_run.state_type
        if state_type == StateType.CANCELLING:
            client.set_flow_run_state(flow_run.id, Cancelled(message="Job dismissed"), force=True)
            return
        launch = launch_for(flow_run) if state_type != StateType.RUNNING else None
        if launch is None:
            message = "The pygeoapi process that ran this job stopped"
            client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
            notify_failed(flow_run, message)
            return
        LOGGER.info("Starting job %s, left waiting by a stopped pygeoapi process", flow_run.id)
        client.update_flow_run_labels(flow_run.id, {LABEL_RUNNER: runner_id()})
        self.start(launch)

    def _finish(self, run_id: uuid.UUID, job: _Job) -> None:
        """Record how a job's process ended: CANCELLED, CRASHED, or as the engine left it."""
        client = self._connection.client
        try:
            if job.cancel_requested and not job.finished.is_set():
                # (a job whose engine had already recorded its outcome keeps it)
                client.set_flow_run_state(run_id, Cancelled(message="Job dismissed"), force=True)
            elif job.exit_code != 0:
                flow_run = client.read_flow_run(run_id)
                if flow_run.state is None or not flow_run.state.is_final():
                    message = f"The job's process exited with code {job.exit_code}"
                    client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                    notify_failed(flow_run, message)
        except Exception:
            LOGGER.exception("Could not record the end of job %s", run_id)
        finally:
            with self._lock:
                if self._jobs.pop(run_id, None) is not None and job.launcher is not None:
                    self._running -= 1
                self._dispatch()
            job.finished.set()
            job.done.set()

    def _watch_cancellations(self, launcher: _Launcher) -> None:
        """Kill the jobs another replica dismissed (their flow runs are CANCELLING)."""
        while launcher.process.poll() is None:
            time.sleep(_CANCEL_POLL_SECONDS)
            with self._lock:
                started = {run_id: job for run_id, job in self._jobs.items() if job.pid is not None}
            run_ids = list(started)
            if not run_ids:
                continue
            # Jobs that outlive a moment get their process id recorded, for recovery.
            now = time.monotonic()
            for run_id, job in started.items():
                if not job.pid_labelled and now - job.started_at > _LABEL_PID_AFTER_SECONDS:
                    job.pid_labelled = True
                    self._label_pid(run_id, int(job.pid or 0))
            try:
                cancelling = self._connection.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=run_ids),
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.CANCELLING])
                        ),
                    )
                )
            except Exception:
                LOGGER.warning("Could not check for dismissed jobs", exc_info=True)
                continue
            for flow_run in cancelling:
                LOGGER.info("Stopping dismissed job %s", flow_run.id)
                threading.Thread(target=self.cancel, args=(flow_run.id,), daemon=True).start()
