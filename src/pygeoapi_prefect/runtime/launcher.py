"""The job launcher: a small process that forks one child per job.

The embedded runner starts it once (`python -m pygeoapi_prefect.runtime.launcher CMD_FD EVENT_FD`).
It imports Prefect, pygeoapi and the flow engine up front and stays single-threaded, so
forking it is safe and each job process starts warm, in milliseconds. It talks to the
runner over two pipes with `multiprocessing.connection.Connection` messages:

- in: `("init", {"sys_path": ..., "api_url": ..., "auth_string": ...})`, then
  `("run", JobLaunch)` per job;
- out: `("ready", None, pid)` once initialised; per job `("started", flow_run_id, pid)`,
  then from the job's own process `("finished", flow_run_id, code)` once the flow engine
  is done, and `("exited", flow_run_id, exit_code)` when the process has ended.

When the runner's pipe closes (the web server stopped) it lets running jobs finish and
exits; each job records its own outcome in Prefect.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import uuid
from multiprocessing.connection import Connection
from typing import NoReturn

from pygeoapi_prefect._compat import join_threads_and_run_exit_hooks
from pygeoapi_prefect.runtime.job_process import prepare, run_job
from pygeoapi_prefect.runtime.runner import JobLaunch

__all__: list[str] = []


def _fork_job(launch: JobLaunch, commands: Connection, events: Connection) -> int:
    pid = os.fork()
    if pid:
        return pid
    # In the job's process: leave the pipes to the launcher and run the job.
    os.setpgrp()  # a group of its own: dismissing the job also stops what it started
    commands.close()
    code = 0
    try:
        run_job(launch)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # The flow run's final state is recorded: tell the runner before Prefect's shutdown.
    _report(events, ("finished", launch.flow_run.id, code))
    events.close()
    _exit(code)


def _exit(code: int) -> NoReturn:
    """End a job process as Python would, but without tearing the interpreter down.

    Threads are joined and exit hooks run (Prefect drains its log and event workers there);
    freeing every module and object inherited from the launcher is skipped: it would write
    to, and so copy, most of the launcher's memory, which cost a job process more CPU than
    its job.
    """
    join_threads_and_run_exit_hooks()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(command_fd: int, event_fd: int) -> None:
    """Serve launch requests until the runner goes away.

    Args:
        command_fd: The pipe the runner writes requests to.
        event_fd: The pipe this launcher reports to.
    """
    commands = Connection(command_fd, writable=False)
    events = Connection(event_fd, readable=False)
    children: dict[int, uuid.UUID] = {}
    closing = False
    while not closing or children:
        if closing:
            time.sleep(0.05)
        elif commands.poll(0.02):
            try:
                kind, payload = commands.recv()
            except EOFError:
                closing = True
                continue
            if kind == "init":
                sys.path[:] = payload["sys_path"]
                prepare(payload["api_url"], payload.get("auth_string"))
                # What the launcher holds now is never collected in a job process, so
                # that its garbage collector does not copy the launcher's memory either.
                gc.freeze()
                _report(events, ("ready", None, os.getpid()))
            elif kind == "run":
                pid = _fork_job(payload, commands, events)
                children[pid] = payload.flow_run.id
                closing = not _report(events, ("started", payload.flow_run.id, pid))
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            run_id = children.pop(pid)
            if not closing:
                closing = not _report(events, ("exited", run_id, os.waitstatus_to_exitcode(status)))


def _report(events: Connection, message: tuple[str, uuid.UUID | None, int]) -> bool:
    try:
        events.send(message)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
