"""How long a duplicate submission takes: `python -m benchmarks.dedup` (not in `make bench`).

One pygeoapi server on the embedded default (a Prefect home of its own), with `echo`
deduplicated (`processor.prefect.dedup: true`) and a copy of it that is not. Medians of
20 requests each: fresh async submissions (new inputs each time), duplicate async
submissions of a finished job, duplicate sync requests (answered with that job's result),
and fresh async submissions of the process without dedup (no idempotency key).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import measure
from benchmarks.run import log, manager_def
from benchmarks.servers import ProcessRegistry, free_port, start_pygeoapi, write_config

ECHO = "pygeoapi_prefect.examples.EchoProcessor"
RESOURCES: dict[str, Any] = {
    "echo-dedup": {"type": "process", "processor": {"name": ECHO, "prefect": {"dedup": True}}},
    "echo": {"type": "process", "processor": {"name": ECHO}},
}


def timed(client: httpx.Client, process: str, body: dict[str, Any], sync: bool) -> float:
    """Seconds one execute request takes (201 async, 200 sync)."""
    headers = {} if sync else measure.ASYNC
    started = time.perf_counter()
    response = client.post(f"/processes/{process}/execution", json=body, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != (200 if sync else 201):
        raise RuntimeError(f"execute answered {response.status_code}: {response.text[:300]}")
    return elapsed


def main() -> int:
    """Start the server, measure, print the medians (ms)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20, help="requests per figure")
    reps = parser.parse_args().reps
    registry = ProcessRegistry()
    with tempfile.TemporaryDirectory(prefix="pygeoapi-dedup-bench-") as tmp:
        workdir = Path(tmp)
        definition = manager_def("ours", workdir)
        Path(definition["output_dir"]).mkdir(parents=True)
        port = free_port()
        config = workdir / "pygeoapi-config.yml"
        openapi = write_config(config, definition, port, RESOURCES)
        try:
            server = start_pygeoapi(
                registry,
                "pygeoapi (dedup)",
                config,
                openapi,
                port,
                workdir / "pygeoapi.log",
                {"PREFECT_HOME": str(workdir / "prefect-home")},
            )
            log(f"server answers after {server.extra['ready_s']:.1f} s")
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                body = {"inputs": {"echoInput": "first"}}
                job_id = measure.submit(client, "echo-dedup", body)  # (and warms up)
                measure.wait_status(client, job_id, {"successful"}, timeout=120, interval=0.1)
                figures = {
                    "fresh async submission (dedup on)": [
                        timed(client, "echo-dedup", {"inputs": {"echoInput": f"n{i}"}}, False)
                        for i in range(reps)
                    ],
                    "duplicate async submission": [
                        timed(client, "echo-dedup", body, False) for _ in range(reps)
                    ],
                    "duplicate sync request (earlier result)": [
                        timed(client, "echo-dedup", body, True) for _ in range(reps)
                    ],
                    "fresh async submission (dedup off)": [
                        timed(client, "echo", {"inputs": {"echoInput": f"m{i}"}}, False)
                        for i in range(reps)
                    ],
                }
            for name, samples in figures.items():
                figure = measure.summary(samples)
                log(f"{name}: median {figure['median']} ms, p90 {figure['p90']} ms (n={reps})")
        finally:
            registry.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
