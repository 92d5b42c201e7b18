"""BasePrefectProcessor: a Prefect flow published as an OGC process."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from pygeoapi_prefect.examples import WordStatsProcessor
from tests.conftest import job_status, submit, wait_for, wait_until_final


def test_flow_process_runs_sync_with_its_tasks(client: Any) -> None:
    response = client.post(
        "/processes/word-stats/execution",
        json={"inputs": {"text": "the cat and the hat", "top": 2}},
    )
    assert response.status_code == 200, response.data
    assert response.json == {
        "words": 5,
        "distinct": 4,
        "top": [{"word": "the", "count": 2}, {"word": "and", "count": 1}],
    }
    # one value per output the description declares
    assert set(client.get("/processes/word-stats?f=json").json["outputs"]) == set(response.json)


def test_flow_process_job_is_a_run_of_the_authors_flow(client: Any) -> None:
    job_id = submit(client, "word-stats", {"text": "a b a"})
    assert wait_until_final(client, job_id)["status"] == "successful"
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(job_id)  # type: ignore[arg-type]
        flow = prefect.read_flow(flow_run.flow_id)
        # task runs reach the API through events, a moment after the flow run ends
        task_names = wait_for(
            lambda: {
                "names": {
                    run.name.split("-")[0]
                    for run in prefect.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
                    )
                }
            },
            lambda found: found["names"] >= {"split_words", "count_words", "top_words"},
        )["names"]
    assert flow.name == "word-stats"
    assert flow_run.parameters["job_id"] == job_id
    assert flow_run.parameters["execute_request"]["inputs"] == {"text": "a b a"}
    assert flow_run.parameters["process_description"]["id"] == "word-stats"
    assert {"split_words", "count_words", "top_words"} <= task_names
    assert {"pygeoapi", "pygeoapi-process:word-stats"} <= set(flow_run.tags)


def test_progress_and_task_retries(client: Any) -> None:
    job_id = submit(client, "tiles", {"tiles": 4, "failEvery": 2, "tileSeconds": 0.3})
    wait_for(
        lambda: job_status(client, job_id),
        lambda j: j["status"] == "running" and 0 < j["progress"] < 100,
        timeout=20,
        interval=0.05,
    )
    final = wait_until_final(client, job_id)
    assert final["status"] == "successful"
    results = client.get(f"/jobs/{job_id}/results?f=json").json
    assert results == {"tiles": 4, "retried": [2, 4]}
    assert set(client.get("/processes/tiles?f=json").json["outputs"]) == set(results)


def test_invalid_input_is_refused_before_any_job_exists(client: Any, manager: Any) -> None:
    before = manager.get_jobs(limit=1)["numberMatched"]
    response = client.post("/processes/word-stats/execution", json={"inputs": {"top": 2}})
    assert response.status_code == 400
    assert "text" in response.json["description"]
    response = client.post(
        "/processes/word-stats/execution", json={"inputs": {"text": "x", "top": "many"}}
    )
    assert response.status_code == 400
    assert "top" in response.json["description"]
    assert manager.get_jobs(limit=1)["numberMatched"] == before


def test_processor_runs_in_process_for_other_managers() -> None:
    processor = WordStatsProcessor({"name": "word-stats"})
    mimetype, outputs = processor.execute({"text": "x y x"})
    assert mimetype == "application/json"
    assert outputs["words"] == 3
    assert processor.metadata["id"] == "word-stats"
    assert processor.metadata["inputs"]["text"]["schema"] == {"type": "string"}
