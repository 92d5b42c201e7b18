"""A process reports progress; GET /jobs/{id} shows it while the job runs."""

from __future__ import annotations

from typing import Any

from pygeoapi_prefect import report_progress
from tests.conftest import job_status, submit, wait_for, wait_until_final


def test_progress_is_seen_mid_run(client: Any) -> None:
    job_id = submit(client, "progress", {"steps": 4, "stepSeconds": 0.6})
    mid = wait_for(
        lambda: job_status(client, job_id),
        lambda j: j["status"] == "running" and 0 < j["progress"] < 100,
        timeout=20,
        interval=0.05,
    )
    assert mid["progress"] in {25, 50, 75}
    assert mid["message"].startswith("step ")
    final = wait_until_final(client, job_id)
    assert final["status"] == "successful"
    assert final["progress"] == 100


def test_report_progress_outside_a_job_only_logs(caplog: Any) -> None:
    with caplog.at_level("INFO"):
        report_progress(150, "nowhere")
    assert "progress 100%" in caplog.text
