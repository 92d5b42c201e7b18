"""`pygeoapi-prefect` commands against the session's real Prefect API."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import Deployment, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from pygeoapi_prefect.cli import ZOMBIE_AUTOMATION, cli
from tests.conftest import EXAMPLE_CONFIG, PYGEOAPI, ROOT, free_port

RESULT_BLOCK = "local-file-system/cli-results"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example config; echo and word-stats point at deployments."""
    directory = tmp_path_factory.mktemp("cli")
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["server"]["manager"]["prefect"] = {"result_storage": RESULT_BLOCK}
    resources = data["resources"]
    resources["echo"]["processor"]["prefect"] = {"deployment": "pygeoapi-process/echo-cli"}
    resources["word-stats"]["processor"]["prefect"] = {"deployment": "word-stats/word-stats-cli"}
    path = directory / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def work_pool(prefect_api: str) -> Iterator[str]:
    name = f"cli-pool-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    yield name
    with get_client(sync_client=True) as client:
        client.delete_work_pool(name)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def read_deployment(name: str) -> Deployment:
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_processes_lists_the_example_processes(config: Path) -> None:
    result = run("processes", "--pygeoapi-config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PROCESS", "PROCESSOR", "DEPLOYMENT"]
    listed = {line.split()[0]: line for line in lines[1:]}
    assert set(listed) == {"hello-world", "echo", "fail", "progress", "word-stats", "tiles"}
    assert "pygeoapi_prefect.examples.EchoProcessor" in listed["echo"]
    assert "none: runs on the embedded runner" in listed["hello-world"]


def test_deploy_a_stock_process_with_a_schedule(config: Path, work_pool: str) -> None:
    result = run(
        "deploy-process",
        "echo",
        "--pygeoapi-config",
        str(config),
        "--work-pool",
        work_pool,
        "--work-queue",
        "urgent",
        "--name",
        "echo-cli",
        "--cron",
        "0 6 * * *",
        "--timezone",
        "Europe/Paris",
        "--input",
        "echoInput=hi",
    )
    assert result.exit_code == 0, result.output
    assert "pygeoapi-process/echo-cli" in result.output

    deployment = read_deployment("pygeoapi-process/echo-cli")
    assert deployment.entrypoint == "pygeoapi_prefect.flows.run_pygeoapi_process"
    assert deployment.work_pool_name == work_pool
    assert deployment.work_queue_name == "urgent"
    assert deployment.parameters == {
        "process_id": "echo",
        "processor": {
            "name": "pygeoapi_prefect.examples.EchoProcessor",
            "prefect": {"deployment": "pygeoapi-process/echo-cli"},
        },
    }
    # runs the schedule creates list as jobs of the process
    assert {"pygeoapi", "pygeoapi-process:echo"} <= set(deployment.tags)
    env = deployment.job_variables["env"]
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == RESULT_BLOCK
    assert env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert env["PREFECT_RESULTS_DEFAULT_SERIALIZER"] == "json"
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    [schedule] = deployment.schedules
    assert isinstance(schedule.schedule, CronSchedule)
    assert schedule.schedule.cron == "0 6 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    assert schedule.parameters == {
        **deployment.parameters,
        "inputs": {"echoInput": "hi"},
        "outputs": None,
        "response": "raw",
    }

    # the processes listing now shows where echo runs
    listing = run("processes", "--pygeoapi-config", str(config))
    echo = next(line for line in listing.output.splitlines() if line.startswith("echo "))
    assert f"pygeoapi-process/echo-cli (work pool {work_pool})" in echo


def test_deploy_a_prefect_processor(config: Path, work_pool: str) -> None:
    result = run(
        "deploy-process", "word-stats", "--pygeoapi-config", str(config), "--work-pool", work_pool
    )
    assert result.exit_code == 0, result.output
    deployment = read_deployment("word-stats/word-stats-cli")
    assert deployment.entrypoint == "pygeoapi_prefect.examples.flows.word_stats_flow"
    assert deployment.work_pool_name == work_pool
    assert deployment.parameters == {}
    assert deployment.schedules == []
    env = deployment.job_variables["env"]
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == RESULT_BLOCK


def test_schedule_of_a_prefect_processor_carries_an_execute_request(
    config: Path, work_pool: str
) -> None:
    result = run(
        "deploy-process",
        "word-stats",
        "--pygeoapi-config",
        str(config),
        "--work-pool",
        work_pool,
        "--name",
        "word-stats-daily",
        "--cron",
        "0 7 * * *",
        "--input",
        "text=a b a",
    )
    assert result.exit_code == 0, result.output
    [schedule] = read_deployment("word-stats/word-stats-daily").schedules
    assert schedule.parameters["execute_request"]["inputs"] == {"text": "a b a"}
    assert schedule.parameters["process_description"]["id"] == "word-stats"
    assert schedule.parameters["job_id"] is None


def test_deploying_again_updates_the_deployment(config: Path, work_pool: str) -> None:
    args = ["deploy-process", "echo", "--pygeoapi-config", str(config), "--work-pool", work_pool]
    assert run(*args, "--name", "echo-again").exit_code == 0
    first = read_deployment("pygeoapi-process/echo-again")
    result = run(*args, "--name", "echo-again", "--work-queue", "later", "--interval", "3600")
    assert result.exit_code == 0, result.output
    second = read_deployment("pygeoapi-process/echo-again")
    assert second.id == first.id
    assert second.work_queue_name == "later"
    assert len(second.schedules) == 1
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["echo-again"]))
        )
    assert [d.id for d in found] == [first.id]
    # the config's deployment name differs: the command says what to set
    assert "Set `processor.prefect.deployment: pygeoapi-process/echo-again`" in result.output


def test_job_variables_are_merged_with_the_results_env(config: Path, work_pool: str) -> None:
    result = run(
        "deploy-process",
        "echo",
        "--pygeoapi-config",
        str(config),
        "--work-pool",
        work_pool,
        "--name",
        "echo-image",
        "--job-variable",
        "image=ghcr.io/x/y:1",
        "--job-variable",
        'env={"A":"1"}',
    )
    assert result.exit_code == 0, result.output
    variables = read_deployment("pygeoapi-process/echo-image").job_variables
    assert variables["image"] == "ghcr.io/x/y:1"
    assert variables["env"] == {
        "A": "1",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": RESULT_BLOCK,
        "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }


def test_deploy_ensures_one_zombie_automation(config: Path, work_pool: str) -> None:
    args = ["deploy-process", "echo", "--pygeoapi-config", str(config), "--work-pool", work_pool]
    args += ["--name", "echo-zombie", "--heartbeat-frequency", "40"]
    assert run(*args, "--heartbeat-timeout", "120").exit_code == 0
    result = run(*args, "--heartbeat-timeout", "100")
    assert result.exit_code == 0, result.output
    env = read_deployment("pygeoapi-process/echo-zombie").job_variables["env"]
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "40"
    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert automation.enabled
    trigger: Any = automation.trigger
    assert trigger.posture == "Proactive"
    assert trigger.within.total_seconds() == 100
    assert trigger.after == {"prefect.flow-run.Running", "prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.heartbeat" in trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    [action] = automation.actions
    assert action.type == "change-flow-run-state"
    assert action.state == StateType.CRASHED  # type: ignore[union-attr]


ECHO_ON_X = ["deploy-process", "echo", "--work-pool", "x"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy-process", "nope", "--work-pool", "x"], "unknown process 'nope'"),
        (["deploy-process", "echo", "--work-pool", "no-such-pool"], "unknown work pool"),
        (["deploy-process", "echo"], "no work pool"),
        (
            [*ECHO_ON_X, "--cron", "0 6 * * *", "--interval", "60"],
            "at most one of --cron, --interval and --rrule",
        ),
        (
            [*ECHO_ON_X, "--heartbeat-timeout", "30"],
            "must be longer than --heartbeat-frequency",
        ),
        ([*ECHO_ON_X, "--heartbeat-frequency", "5"], "30"),
        ([*ECHO_ON_X, "--cron", "0 6 * * *", "--input", "novalue"], "KEY=VALUE"),
        ([*ECHO_ON_X, "--input", "a=1"], "give a schedule"),
        ([*ECHO_ON_X, "--job-variable", "env=[1]"], "must be a JSON object"),
    ],
)
def test_deploy_errors_are_clear(config: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--pygeoapi-config", str(config)])
    assert result.exit_code != 0
    assert not isinstance(result.exception, AssertionError | TypeError | AttributeError)
    assert message in result.output, result.output


@pytest.mark.parametrize(
    ("section", "options", "message"),
    [
        (
            "hello-world",
            {"retires": 2},
            "resources.hello-world.processor.prefect.retires: unknown key; accepted keys: "
            "deployment, timeout, retries",
        ),
        (None, {"sync_timeot": 5}, "server.manager.prefect.sync_timeot: unknown key"),
    ],
)
def test_processes_refuses_a_config_mistake(
    config: Path, tmp_path: Path, section: str | None, options: dict[str, Any], message: str
) -> None:
    data = yaml.safe_load(config.read_text())
    if section is None:
        data["server"]["manager"]["prefect"] = options
    else:
        data["resources"][section]["processor"]["prefect"] = options
    broken = tmp_path / "pygeoapi-config.yml"
    broken.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["processes", "--pygeoapi-config", str(broken)])
    assert result.exit_code == 1, result.output
    assert f"Error: {message}" in result.output
    assert "validation error" not in result.output  # not pydantic's own dump


def test_an_unreachable_api_is_reported(config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        for args in (
            ["deploy-process", "echo", "--work-pool", "x"],
            ["processes"],
        ):
            result = CliRunner().invoke(cli, [*args, "--pygeoapi-config", str(config)])
            assert result.exit_code == 1, result.output
            assert "cannot reach the Prefect API" in result.output


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(cli.commands))])
def test_help_works_for_every_command(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_every_documented_command_exists() -> None:
    assert {"processes", "deploy-process", "worker"} <= set(cli.commands)


def test_the_pygeoapi_plugin_is_reachable() -> None:
    done = subprocess.run(
        [PYGEOAPI, "plugins", "prefect", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("processes", "deploy-process", "worker"):
        assert command in done.stdout
