"""The Prefect UI on the embedded default, in a real headless browser.

The embedded Prefect API serves Prefect's UI, the server logs its address when it starts,
and a job's status document links to its flow-run page, which shows the job's flow run
by name with its state. Debian's `chromium` and `chromium-driver` drive the page through
Selenium; without them the test skips locally and fails in CI.

`PYGEOAPI_PREFECT_SCREENSHOT=docs/img/flow-run-page.png` also saves the page for the docs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import FullServer
from tests.conftest import TERMINAL, free_port, migrated_home, wait_for, write_config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
UI_LINE = re.compile(r"The Prefect UI of this server's jobs: (http://\S+)")


def _require_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.timeout(600)
def test_status_document_links_to_the_flow_run_page(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    config = write_config(tmp_path, port=free_port())
    server = FullServer(
        config, {"PREFECT_API_URL": "", "PREFECT_HOME": migrated_home(tmp_path / "home")}
    )
    try:
        server.start(timeout=300)
        # The UI's address is in the log at start (pygeoapi's default level shows it).
        found = UI_LINE.search(server.log.read_text())
        assert found, server.log.read_text()[-2000:]
        ui = found.group(1)
        assert ui.startswith("http://127.0.0.1:")

        submitted = httpx.post(
            f"{server.url}/processes/hello-world/execution",
            json={"inputs": {"name": "browser"}},
            headers={"Prefer": "respond-async"},
            timeout=60,
        )
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["jobID"]
        status = wait_for(
            lambda: httpx.get(f"{server.url}/jobs/{job_id}", timeout=60).json(),
            lambda job: job["status"] in TERMINAL,
            timeout=120,
        )
        assert status["status"] == "successful", status
        links = [link for link in status["links"] if link["type"] == "text/html"]
        assert links == [
            {
                "href": f"{ui}/runs/flow-run/{job_id}",
                "rel": "related",
                "type": "text/html",
                "title": "the job's flow run in the Prefect UI",
            }
        ]
        # The embedded API requires its auth string, kept only in a file of this user's:
        # the UI asks for it once (its login page stores it in the browser, as done here).
        record = json.loads((tmp_path / "home" / "pygeoapi-embedded-api.json").read_text())
        auth = base64.b64encode(record["auth_string"].encode()).decode()
        assert httpx.get(f"{ui}/api/flow_runs/{job_id}", timeout=60).status_code == 401
        name = httpx.get(
            f"{ui}/api/flow_runs/{job_id}", headers={"Authorization": f"Basic {auth}"}, timeout=60
        ).json()["name"]

        browser.get(ui)
        browser.execute_script("localStorage.setItem('prefect-password', arguments[0])", auth)
        browser.get(links[0]["href"])
        WebDriverWait(browser, 120).until(
            lambda driver: (
                name in driver.find_element(By.TAG_NAME, "body").text
                and "Completed" in driver.find_element(By.TAG_NAME, "body").text
            )
        )
        browser.save_screenshot(str(tmp_path / "flow-run-page.png"))
        target = os.environ.get("PYGEOAPI_PREFECT_SCREENSHOT")
        if target:
            shutil.copyfile(tmp_path / "flow-run-page.png", target)
    finally:
        server.stop()


def test_job_records_link_to_the_flow_run_page() -> None:
    from prefect.client.schemas.objects import FlowRun

    from pygeoapi_prefect.jobs import job_record

    flow_run = FlowRun(flow_id=uuid.uuid4(), name="hello-world-a-b", tags=["pygeoapi"])
    assert job_record(flow_run)["links"] == []
    assert job_record(flow_run, ui_url="http://127.0.0.1:8123/")["links"] == [
        {
            "href": f"http://127.0.0.1:8123/runs/flow-run/{flow_run.id}",
            "rel": "related",
            "type": "text/html",
            "title": "the job's flow run in the Prefect UI",
        }
    ]
