"""Orchestration: both managers, the same figures, the same machine, one run."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks import measure
from benchmarks.fill import SERVER_ID, fill_tinydb
from benchmarks.report import RESULTS_DIR, markdown, rows, write
from benchmarks.servers import (
    OURS,
    ROOT,
    TINYDB,
    VENV_BIN,
    Managed,
    ProcessRegistry,
    clean_env,
    free_port,
    start_prefect_server,
    start_pygeoapi,
    write_config,
)


class Plan:
    """How much to measure (the full run, or `--quick` to try the benchmark itself)."""

    def __init__(self, quick: bool) -> None:
        self.reps = 5 if quick else 30
        self.jobs = 40 if quick else 200
        self.clients = 20
        self.small = 100
        self.big = 1000 if quick else 10_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def attempt(into: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run one figure; an error is recorded (and printed), not fatal to the rest."""
    start = time.perf_counter()
    try:
        value = fn()
    except Exception as err:
        log(f"  {key}: ERROR {err!r}")
        traceback.print_exc()
        into[key] = {"error": repr(err)[:500]}
        return None
    into[key] = value
    brief = (
        value
        if not isinstance(value, dict)
        else {
            k: v
            for k, v in value.items()
            if k not in ("memory", "processes", "statuses_after_delete")
        }
    )
    log(f"  {key} ({time.perf_counter() - start:.1f} s): {json.dumps(brief, default=str)[:300]}")
    return value


def manager_def(kind: str, workdir: Path) -> dict[str, Any]:
    if kind == "tinydb":
        return {
            "name": TINYDB,
            "connection": str(workdir / "jobs.db"),
            "output_dir": str(workdir / "out"),
        }
    return {
        "name": OURS,
        "connection": None,
        "output_dir": str(workdir / "results"),
        "prefect": {"server_id": SERVER_ID},
    }


def start_server(
    registry: ProcessRegistry, kind: str, workdir: Path, env_extra: dict[str, str]
) -> tuple[Managed, dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    definition = manager_def(kind, workdir)
    if definition.get("output_dir"):
        Path(definition["output_dir"]).mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "pygeoapi-config.yml"
    openapi = write_config(config, definition, port)
    server = start_pygeoapi(
        registry, f"pygeoapi ({kind})", config, openapi, port, workdir / "pygeoapi.log", env_extra
    )
    log(f"  pygeoapi ({kind}) answers on {server.base_url} after {server.extra['ready_s']:.1f} s")
    return server, definition


def phase_jobs(registry: ProcessRegistry, kind: str, tmp: Path, plan: Plan) -> dict[str, Any]:
    """Figures 1-4, 6 and 7 on a fresh server."""
    out: dict[str, Any] = {}
    workdir = tmp / kind
    env = {"PREFECT_HOME": str(workdir / "prefect-home")} if kind == "ours" else {}
    server, definition = start_server(registry, kind, workdir, env)
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            if attempt(out, "warm_up", lambda: measure.warm_up(client, timeout=90)) is None:
                log(f"  {kind}: warm-up failed, log tail:\n{server.log_tail()}")
                return out
            attempt(
                out,
                "dismiss",
                lambda: measure.dismiss(client, server, Path(definition["output_dir"])),
            )
            attempt(out, "sync", lambda: measure.sync_execute(client, plan.reps))
            submitted: list[str] = []

            def submits() -> dict[str, Any]:
                figure, jobs = measure.async_submit(client, plan.reps)
                submitted.extend(jobs)
                return figure

            attempt(out, "async_submit", submits)
            # Let those jobs finish, so that the next figures start on an idle server.
            for job in submitted:
                measure.wait_status(client, job, {"successful"}, timeout=60, interval=0.1)
            attempt(
                out, "submit_to_successful", lambda: measure.submit_to_successful(client, plan.reps)
            )
            attempt(
                out,
                "throughput",
                lambda: measure.throughput(
                    server.base_url, server, total=plan.jobs, clients=plan.clients
                ),
            )
            dismissed = out.get("dismiss")
            if kind == "tinydb" and isinstance(dismissed, dict):
                log(
                    "  tinydb: does the dismissed job still finish? (waits until 65 s after DELETE)"
                )
                measure.tinydb_leftover(dismissed)
                log(f"  result file after DELETE: {dismissed.get('result_file_after_delete')}")
    finally:
        if kind == "ours":
            out["server_log_tail"] = server.log_tail(40)
        registry.stop(server)
    return out


def phase_cold_start(registry: ProcessRegistry, kind: str, tmp: Path) -> dict[str, Any]:
    """The first sync execute, and the first async job, of a server that has just started.

    Each on a server of its own, started from nothing (a fresh PREFECT_HOME for ours), and
    measured as soon as the server first answers its landing page.
    """
    out: dict[str, Any] = {}
    for key, figure in (
        ("cold_sync", measure.first_sync_execute),
        ("cold_async", measure.first_async_job),
    ):
        workdir = tmp / f"{kind}-{key}"
        env = {"PREFECT_HOME": str(workdir / "prefect-home")} if kind == "ours" else {}
        server, _ = start_server(registry, kind, workdir, env)
        out[f"{key}_ready_s"] = round(server.extra["ready_s"], 2)
        try:
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                value = attempt(out, key, functools.partial(figure, client))
            if value is None or kind == "ours":
                out[f"{key}_log_tail"] = server.log_tail(20)
        finally:
            registry.stop(server)
    return out


def _fill_prefect(mode: str, target: str, count: int, home: Path, ids_file: Path) -> list[str]:
    start = time.perf_counter()
    subprocess.run(
        [
            str(VENV_BIN / "python"),
            "-m",
            "benchmarks.fill",
            mode,
            target,
            str(count),
            str(ids_file),
        ],
        cwd=ROOT,
        env=clean_env({"PREFECT_HOME": str(home)}),
        check=True,
        timeout=900,
    )
    log(f"  filled {count} flow runs ({mode}) in {time.perf_counter() - start:.1f} s")
    ids: list[str] = json.loads(ids_file.read_text(encoding="utf-8"))
    return ids


def phase_listing(registry: ProcessRegistry, kind: str, tmp: Path, plan: Plan) -> dict[str, Any]:
    """Figure 5: listing and reading jobs with a small and a big store."""
    out: dict[str, Any] = {}
    workdir = tmp / f"{kind}-listing"
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "prefect-server-home"
    prefect: Managed | None = None
    server: Managed | None = None
    try:
        if kind == "tinydb":
            definition = manager_def(kind, workdir)
            start = time.perf_counter()
            ids = fill_tinydb(Path(definition["connection"]), workdir / "out", plan.small, True)
            out["fill_small_s"] = round(time.perf_counter() - start, 2)
            server, _ = start_server(registry, kind, workdir, {})
        else:
            prefect = start_prefect_server(registry, home, workdir / "prefect-server.log")
            log(
                f"  prefect server answers on {prefect.base_url} after "
                f"{prefect.extra['ready_s']:.1f} s"
            )
            start = time.perf_counter()
            ids = _fill_prefect("api", prefect.base_url, plan.small, home, workdir / "ids1.json")
            out["fill_small_s"] = round(time.perf_counter() - start, 2)
            server, _ = start_server(
                registry,
                kind,
                workdir,
                {
                    "PREFECT_API_URL": prefect.base_url,
                    "PREFECT_HOME": str(workdir / "prefect-home"),
                },
            )
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            attempt(out, "list_100", lambda: measure.list_latency(client, ids, plan.reps))
            more = plan.big - plan.small
            start = time.perf_counter()
            try:
                if kind == "tinydb":
                    ids += fill_tinydb(
                        Path(manager_def(kind, workdir)["connection"]), workdir / "out", more, False
                    )
                else:
                    assert prefect is not None
                    ids += _fill_prefect("db", "-", more, home, workdir / "ids2.json")
            except Exception as err:
                out["list_10k"] = {"error": f"fill failed: {err!r}"[:500]}
                return out
            out["fill_big_s"] = round(time.perf_counter() - start, 2)
            attempt(out, "list_10k", lambda: measure.list_latency(client, ids, plan.reps))
    finally:
        for managed in (server, prefect):
            if managed is not None:
                registry.stop(managed)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer reps, to try the benchmark")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, dbs)")
    parser.add_argument(
        "--cold-start", action="store_true", help="measure only the first jobs after a start"
    )
    args = parser.parse_args(argv)
    plan = Plan(args.quick)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-bench-"))
    registry = ProcessRegistry()
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code": git_state(),
        },
        "plan": vars(plan),
        "tinydb": {},
        "ours": {},
        "phases_s": {},
        "notes": [],
    }
    log(f"benchmark in {tmp} ({os.cpu_count()} cores){' [quick]' if args.quick else ''}")
    try:
        for kind in ("tinydb", "ours"):
            log(f"{kind}: cold start")
            start = time.perf_counter()
            results[kind].update(phase_cold_start(registry, kind, tmp))
            results["phases_s"][f"{kind}_cold_start"] = round(time.perf_counter() - start, 1)
        for kind in () if args.cold_start else ("tinydb", "ours"):
            log(f"{kind}: jobs (figures 1-4, 6, 7)")
            start = time.perf_counter()
            results[kind].update(phase_jobs(registry, kind, tmp, plan))
            results["phases_s"][f"{kind}_jobs"] = round(time.perf_counter() - start, 1)
        for kind in () if args.cold_start else ("tinydb", "ours"):
            log(f"{kind}: listing (figure 5)")
            start = time.perf_counter()
            try:
                results[kind].update(phase_listing(registry, kind, tmp, plan))
            except Exception as err:
                log(f"  listing of {kind} failed: {err!r}")
                traceback.print_exc()
                results[kind]["list_100"] = {"error": repr(err)[:500]}
            results["phases_s"][f"{kind}_listing"] = round(time.perf_counter() - start, 1)
    except KeyboardInterrupt:
        log("interrupted")
        results["notes"].append("interrupted before the end")
    finally:
        registry.stop_all()
        keep_logs(tmp)
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["notes"] += notes(results, plan)
    table = rows(results)
    text = markdown(results, table)
    write(results, table, text)
    print()
    print(text)
    print(f"written to {RESULTS_DIR / 'latest.md'} and {RESULTS_DIR / 'latest.json'}")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def keep_logs(tmp: Path) -> None:
    """Copy the servers' logs to benchmarks/results/logs/ (git-ignored), for evidence."""
    target = RESULTS_DIR / "logs"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for path in tmp.glob("*/*.log"):
        shutil.copyfile(path, target / f"{path.parent.name}-{path.name}")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_state() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def notes(results: dict[str, Any], plan: Plan) -> list[str]:
    tiny, ours = results["tinydb"], results["ours"]
    out = [
        "Servers: `pygeoapi serve` (Flask dev server, debug reloader: two pygeoapi processes),"
        " loopback only, httpx clients in the benchmark process; medians of "
        f"{plan.reps} reps for latencies.",
        "Ours in figures 1-4, 6, 7: the embedded default (connection: null, no PREFECT_API_URL,"
        " PREFECT_HOME in a fresh temp dir).",
        "Figure 5, ours: against an explicit Prefect API (`prefect server start --no-ui"
        " --analytics-off`, SQLite, fresh PREFECT_HOME) via PREFECT_API_URL, because the "
        f"store is filled from outside the server; the first {plan.small} finished jobs were"
        " created with Prefect's client (POST /flow_runs/, COMPLETED, manager's tags), the "
        f"other {plan.big - plan.small} through Prefect's server model layer in batched "
        "transactions (the API manages only ~20 creations/s on SQLite here)"
        f"; fill took {ours.get('fill_small_s')} s + {ours.get('fill_big_s')} s.",
        f"Figure 5, TinyDB: the first {plan.small} jobs added with the manager's add_job"
        f" in-process, the other {plan.big - plan.small} with one insert_multiple under the"
        f" manager's lock; fill took {tiny.get('fill_small_s')} s + {tiny.get('fill_big_s')} s.",
        "TinyDB's jobs take a FileLock around every read and write (filelock polls every"
        " 50 ms), so its async submit median can land near 50 ms when the job's thread holds"
        " the lock.",
        "Figure 3 polls GET /jobs/{id} every 20 ms; figure 4's clients poll their own jobs in"
        " order every 200 ms, and the time ends when the last job is seen successful.",
    ]
    tdis = tiny.get("dismiss")
    if isinstance(tdis, dict) and "error" not in tdis:
        out.append(
            "Dismiss, TinyDB: status before DELETE "
            f"{tdis.get('status_before_delete')!r}, DELETE answered {tdis.get('delete_status')}"
            f" in {tdis.get('delete_s')} s, then GET /jobs/{{id}} read "
            f"{' -> '.join(tdis.get('statuses_after_delete', []))}; the job's thread cannot be "
            "stopped: result file after DELETE "
            f"{tdis.get('result_file_after_delete') or 'none'} "
            f"(checked {tdis.get('checked_after_s')} s after DELETE)."
        )
    odis = ours.get("dismiss")
    if isinstance(odis, dict) and "error" not in odis:
        out.append(
            f"Dismiss, ours: status before DELETE {odis.get('status_before_delete')!r}, DELETE "
            f"answered {odis.get('delete_status')} in {odis.get('delete_s')} s; statuses "
            f"{' -> '.join(odis.get('statuses_after_delete', []))}; job processes "
            f"{odis.get('job_processes')}, gone after {odis.get('process_gone_s')} s."
        )
    for kind in ("tinydb", "ours"):
        figure = results[kind].get("throughput")
        if isinstance(figure, dict) and "error" not in figure:
            out.append(
                f"Throughput, {kind}: {figure.get('submitted')} submitted in "
                f"{figure.get('elapsed_s')} s, statuses {figure.get('statuses')}, submit errors "
                f"{figure.get('submit_errors')} {figure.get('submit_error_examples')}, submit "
                f"latency under load {figure.get('submit_latency_under_load')}, GET /jobs "
                f"listed {figure.get('listed_total')} jobs, {figure.get('listed_new')} new; "
                f"not successful: {figure.get('not_successful_examples') or 'none'}."
            )
    out.append(f"Phase durations (s): {results.get('phases_s')}.")
    return out
