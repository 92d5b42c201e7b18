"""Fill a job store quickly, without HTTP: finished hello-world jobs.

- TinyDB: the manager's own `add_job` in this process (first jobs), then the rest in one
  `insert_multiple` under the manager's lock (one insert at a time rewrites the whole file).
- Prefect: `python -m benchmarks.fill api API_URL COUNT IDS_FILE` creates COMPLETED flow
  runs with the manager's tags through Prefect's client (about 20/s on SQLite, too slow
  for 10,000); `python -m benchmarks.fill db - COUNT IDS_FILE`, run with the server's
  PREFECT_HOME, creates them through Prefect's server model layer in batched transactions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SERVER_ID = "benchmark"
"""The `server_id` of the benchmark's servers: the filled runs are their jobs."""
TAGS = ["pygeoapi", f"pygeoapi-server:{SERVER_ID}", "pygeoapi-process:hello-world"]
PARAMETERS = {"inputs": {"name": "x"}, "outputs": None, "response": "raw"}


def _tinydb_record(index: int) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC) + dt.timedelta(microseconds=index)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "type": "process",
        "identifier": str(uuid.uuid4()),
        "process_id": "hello-world",
        "created": stamp,
        "started": stamp,
        "updated": stamp,
        "finished": stamp,
        "status": "successful",
        "location": None,
        "mimetype": "application/json",
        "message": "Job complete",
        "progress": 100,
    }


def fill_tinydb(db: Path, output_dir: Path, count: int, one_by_one: bool) -> list[str]:
    from pygeoapi.process.manager.tinydb_ import TinyDBManager

    manager = TinyDBManager({"name": "TinyDB", "connection": str(db), "output_dir": output_dir})
    records = [_tinydb_record(i) for i in range(count)]
    if one_by_one:
        for record in records:
            manager.add_job(record)
    else:
        with manager._db() as store:
            store.insert_multiple(records)
    return [record["identifier"] for record in records]


async def _fill_prefect(api_url: str, count: int, concurrency: int) -> list[str]:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import FlowRunCreate
    from prefect.states import Completed, to_state_create

    ids: list[str] = []
    async with PrefectClient(api=api_url) as client:
        flow_id = await client.create_flow_from_name("hello-world")
        semaphore = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            body = FlowRunCreate(
                flow_id=flow_id,
                name=f"hello-world-bench-{index}",
                parameters=PARAMETERS,
                tags=TAGS,
                state=to_state_create(Completed(message="Job complete")),
            )
            async with semaphore:
                response = await client.request(
                    "POST", "/flow_runs/", json=body.model_dump(mode="json", exclude_unset=True)
                )
            ids.append(str(response.json()["id"]))

        await asyncio.gather(*(one(i) for i in range(count)))
    return ids


async def _fill_prefect_db(count: int, batch: int = 100) -> list[str]:
    """Create COMPLETED flow runs through Prefect's server model layer, many per transaction.

    Runs with the server's PREFECT_HOME, so it writes the server's own SQLite database.
    """
    from prefect.server import models, schemas
    from prefect.server.database import provide_database_interface
    from sqlalchemy.exc import OperationalError

    db = provide_database_interface()
    ids: list[str] = []
    async with db.session_context(begin_transaction=True) as session:
        flow = await models.flows.create_flow(
            session=session, flow=schemas.core.Flow(name="hello-world")
        )
        flow_id = flow.id
    done = 0
    while done < count:
        size = min(batch, count - done)
        # The running server writes too: a batch that meets "database is locked" is retried.
        for attempt in range(6):
            created: list[str] = []
            try:
                async with db.session_context(begin_transaction=True) as session:
                    for index in range(done, done + size):
                        run = await models.flow_runs.create_flow_run(
                            session=session,
                            flow_run=schemas.core.FlowRun(
                                flow_id=flow_id,
                                name=f"hello-world-bench-{index}",
                                parameters=PARAMETERS,
                                tags=TAGS,
                                state=schemas.states.Completed(message="Job complete"),
                            ),
                        )
                        created.append(str(run.id))
            except OperationalError as err:
                if attempt == 5:
                    raise
                print(f"batch at {done}: {str(err).splitlines()[0]}; retrying")
                await asyncio.sleep(1 + attempt)
                continue
            break
        ids.extend(created)
        done += size
    return ids


def main(argv: list[str]) -> int:
    mode, target, count, ids_file = argv[0], argv[1], int(argv[2]), Path(argv[3])
    start = time.perf_counter()
    if mode == "api":
        ids = asyncio.run(_fill_prefect(target, count, concurrency=8))
    else:
        ids = asyncio.run(_fill_prefect_db(count))
    ids_file.write_text(json.dumps(ids), encoding="utf-8")
    print(f"created {len(ids)} flow runs in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
