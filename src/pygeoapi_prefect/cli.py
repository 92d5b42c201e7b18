"""The `pygeoapi-prefect` command line, also reachable as `pygeoapi prefect ...`.

Commands:

- `processes`: the configured processes and the state of their deployments;
- `deploy-process`: create or update the Prefect deployment of a process;
- `worker`: a local Prefect process worker for the configured processes (development);
- `serve`: pygeoapi in full conformance mode (see `pygeoapi_prefect.app`).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import ValidationError
from pygeoapi.plugin import load_plugin

from pygeoapi_prefect.connection import check_api_url
from pygeoapi_prefect.errors import PrefectAPIURLError, processor_import_message
from pygeoapi_prefect.flows import job_parameters, run_pygeoapi_process
from pygeoapi_prefect.jobs import JOB_TAG, process_tag, server_tag
from pygeoapi_prefect.process.base import BasePrefectProcessor, flow_parameters
from pygeoapi_prefect.results import RESULT_SERIALIZER, ResultStorage
from pygeoapi_prefect.schemas import ExecuteRequest
from pygeoapi_prefect.settings import (
    ConfigError,
    ManagerSettings,
    ProcessSettings,
    process_settings_of,
)

__all__ = ["ZOMBIE_AUTOMATION", "cli"]

ZOMBIE_AUTOMATION = "pygeoapi-prefect: crash jobs that stopped sending heartbeats"
"""Name of the automation that marks deployed jobs whose heartbeats stopped CRASHED."""

MIN_HEARTBEAT_FREQUENCY = 30
"""Prefect sends flow-run heartbeats at most this often (seconds)."""


def _load_config(path: Path) -> dict[str, Any]:
    from pygeoapi.util import yaml_load

    with path.open(encoding="utf-8") as handle:
        config: dict[str, Any] = yaml_load(handle)
    return config


def _processes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in (config.get("resources") or {}).items()
        if isinstance(resource, dict) and resource.get("type") == "process"
    }


def _process_settings(process_id: str, resource: dict[str, Any]) -> ProcessSettings:
    try:
        return process_settings_of(process_id, resource)
    except ConfigError as err:
        raise click.ClickException(str(err)) from err


def _api_url(config: dict[str, Any], config_path: Path) -> str:
    """The URL of the Prefect API the configured server uses, checked.

    Without one, Prefect's client would quietly start a temporary API of its own, which
    is gone when the command ends: that is refused.
    """
    url = _manager_settings(config).api_url or PREFECT_API_URL.value()
    if not url:
        raise click.ClickException(
            "no Prefect API configured: PREFECT_API_URL is unset and "
            f"server.manager.connection in {config_path} names no API URL. Set either to the "
            "API URL of the Prefect server your pygeoapi uses (e.g. http://127.0.0.1:4200/api); "
            "without it, Prefect would start a temporary API that is gone when this command ends."
        )
    url = str(url).rstrip("/")
    try:
        check_api_url(url)
    except PrefectAPIURLError as err:
        raise click.ClickException(str(err.description)) from err
    except httpx.TransportError as err:
        raise click.ClickException(
            f"cannot reach the Prefect API at {url} ({err}); is PREFECT_API_URL right?"
        ) from err
    return url


@contextmanager
def _prefect_client(url: str) -> Iterator[SyncPrefectClient]:
    """A Prefect client of `url`, with failures of the API reported as errors naming it."""
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: url}),
            get_client(sync_client=True) as client,
        ):
            yield client
    except httpx.TransportError as err:
        raise click.ClickException(
            f"cannot reach the Prefect API at {url} ({err}); is PREFECT_API_URL right?"
        ) from err
    except PrefectHTTPStatusError as err:
        raise click.ClickException(f"the Prefect API at {url} answered: {err}") from err


def _load_processor(process_id: str, processor_def: dict[str, Any]) -> Any:
    """Load a processor as pygeoapi does, telling a processor that does not import as such."""
    try:
        return load_plugin("process", processor_def)
    except (ImportError, AttributeError) as err:
        raise click.ClickException(
            processor_import_message(process_id, str(processor_def.get("name")), err)
        ) from err


def _json_pairs(pairs: tuple[str, ...], what: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


pygeoapi_config_option = click.option(
    "--pygeoapi-config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PYGEOAPI_CONFIG",
    required=True,
    help="The pygeoapi configuration file [env: PYGEOAPI_CONFIG].",
)


@click.group(name="prefect")
@click.version_option(package_name="pygeoapi-prefect")
def cli() -> None:
    """Run pygeoapi's OGC API - Processes jobs on Prefect.

    Talks to the Prefect API named by PREFECT_API_URL (see `prefect config view`).
    """


@cli.command("processes")
@pygeoapi_config_option
def list_processes(config_path: Path) -> None:
    """List the configured processes and the state of their deployments.

    It checks the settings of the manager and of every process first, as the server does
    when it starts.
    """
    config = _load_config(config_path)
    _manager_settings(config)
    processes = _processes(config)
    deployments: dict[str, str] = {}
    wanted = {
        pid: s.deployment
        for pid, resource in processes.items()
        if (s := _process_settings(pid, resource)).deployment
    }
    if wanted:
        url = _api_url(config, config_path)
        click.echo(f"Deployments on the Prefect API at {url}:", err=True)
        with _prefect_client(url) as client:
            for process_id, name in wanted.items():
                try:
                    deployment = client.read_deployment_by_name(str(name))
                except ObjectNotFound:
                    deployments[process_id] = f"{name} (not deployed)"
                else:
                    pool = deployment.work_pool_name or "-"
                    deployments[process_id] = f"{name} (work pool {pool})"
    click.echo(f"{'PROCESS':24} {'PROCESSOR':48} DEPLOYMENT")
    for process_id, resource in processes.items():
        processor = str((resource.get("processor") or {}).get("name"))
        where = deployments.get(process_id, "none: runs on the embedded runner")
        click.echo(f"{process_id:24} {processor:48} {where}")


def _schedule(
    cron: str | None, interval: float | None, rrule: str | None, timezone: str | None
) -> CronSchedule | IntervalSchedule | RRuleSchedule | None:
    given = [option for option in (cron, interval, rrule) if option is not None]
    if len(given) > 1:
        raise click.UsageError("give at most one of --cron, --interval and --rrule")
    try:
        if cron is not None:
            return CronSchedule(cron=cron, timezone=timezone)
        if interval is not None:
            return IntervalSchedule(interval=timedelta(seconds=interval), timezone=timezone)
        if rrule is not None:
            return RRuleSchedule(rrule=rrule, timezone=timezone)
    except (ValidationError, ValueError) as err:
        raise click.BadParameter(str(err)) from err
    return None


def _manager_settings(config: dict[str, Any]) -> ManagerSettings:
    try:
        return ManagerSettings.from_manager_def((config.get("server") or {}).get("manager") or {})
    except ConfigError as err:
        raise click.ClickException(str(err)) from err


def _result_storage_env(config: dict[str, Any], settings: ProcessSettings) -> dict[str, str]:
    """Make the deployed flow persist results where, and as, the manager reads them (JSON)."""
    slug = settings.result_storage or _manager_settings(config).result_storage_slug
    return {
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": slug,
        "PREFECT_RESULTS_DEFAULT_SERIALIZER": RESULT_SERIALIZER,
    }


def _zombie_automation(heartbeat_timeout: float) -> AutomationCore:
    """Prefect's zombie-flow detection, for the jobs that run on workers.

    A job's flow run sends `prefect.flow-run.heartbeat` events while it runs; when its
    start or a heartbeat is not followed by another heartbeat (or a final state) within
    `heartbeat_timeout` seconds, its worker or machine is gone and the flow run is set
    CRASHED (the job reads `failed`). Only flow runs of deployments are watched: jobs on
    the embedded runner keep Prefect's default heartbeat frequency and are supervised by
    their pygeoapi process.
    """
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks pygeoapi jobs (flow runs of deployments tagged "
        f"{JOB_TAG!r}) CRASHED when they send no heartbeat for {heartbeat_timeout:g} s. "
        "Managed by `pygeoapi-prefect deploy-process`.",
        enabled=True,
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=[
                ResourceSpecification(
                    {
                        "prefect.resource.role": "tag",
                        "prefect.resource.id": f"prefect.tag.{JOB_TAG}",
                    }
                ),
                ResourceSpecification(
                    {
                        "prefect.resource.role": "deployment",
                        "prefect.resource.id": "prefect.deployment.*",
                    }
                ),
            ],
            # Running too: a run whose process dies before its first heartbeat is caught.
            after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            # A final state ends the watch, and so does a pause (a suspended run's process
            # exits); resuming it is a new Running.
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.Paused",
                "prefect.flow-run.Suspended",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=heartbeat_timeout),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {heartbeat_timeout:g} s: the flow run's worker or "
                "process stopped",
            )
        ],
    )


def _ensure_zombie_automation(client: SyncPrefectClient, heartbeat_timeout: float) -> None:
    """Create the zombie-detection automation, or update the existing one (idempotent)."""
    automation = _zombie_automation(heartbeat_timeout)
    existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if not existing:
        client.create_automation(automation)
        return
    client.update_automation(existing[0].id, automation)
    for duplicate in existing[1:]:
        client.delete_automation(duplicate.id)


def _entrypoint(flow: Any, owner: type) -> str:
    """Return where a worker imports a process's flow from.

    `module.function` when the flow is a module attribute (the usual `@flow` function),
    else `file.py:Class.process_flow`.
    """
    module_name, function_name = flow.fn.__module__, flow.fn.__name__
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, function_name, None) is flow:
        return f"{module_name}.{function_name}"
    return f"{inspect.getfile(owner)}:{owner.__name__}.process_flow"


def _scheduled_parameters(
    processor: Any, parameters: dict[str, Any], inputs: dict[str, Any]
) -> dict[str, Any]:
    """The flow parameters of a scheduled run: the execute request of its inputs."""
    if isinstance(processor, BasePrefectProcessor):
        request = ExecuteRequest(inputs=inputs)
        return flow_parameters(None, request, type(processor).process_description)
    return {**parameters, **job_parameters(inputs, None, "raw")}


@cli.command("deploy-process")
@click.argument("process_id")
@pygeoapi_config_option
@click.option("--name", help="Deployment name [default: from the config, else PROCESS_ID].")
@click.option("--work-pool", help="Work pool [default: processor.prefect.work_pool].")
@click.option("--work-queue", help="Work queue [default: processor.prefect.work_queue].")
@click.option("--cron", help="Run on this cron schedule, e.g. '0 6 * * *'.")
@click.option("--interval", type=float, help="Run every this many seconds.")
@click.option("--rrule", help="Run on this RFC 5545 recurrence rule.")
@click.option("--timezone", help="Time zone of the schedule, e.g. Europe/Paris.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Input of the scheduled runs (VALUE as JSON, or a string); repeatable.",
)
@click.option(
    "--job-variable",
    "job_variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Job variable for the work pool (image, env, command...); repeatable.",
)
@click.option(
    "--heartbeat-frequency",
    type=click.IntRange(min=MIN_HEARTBEAT_FREQUENCY),
    default=MIN_HEARTBEAT_FREQUENCY,
    show_default=True,
    help="Seconds between the heartbeats of the deployment's flow runs "
    "(PREFECT_FLOWS_HEARTBEAT_FREQUENCY in the job's env).",
)
@click.option(
    "--heartbeat-timeout",
    type=click.FloatRange(min=10),
    default=90,
    show_default=True,
    help="Mark a job failed (its flow run CRASHED) when it sends no heartbeat for this "
    "many seconds, e.g. because its worker died; one automation serves every deployed "
    "process, and the last deploy-process sets its timeout.",
)
def deploy_process(
    process_id: str,
    config_path: Path,
    name: str | None,
    work_pool: str | None,
    work_queue: str | None,
    cron: str | None,
    interval: float | None,
    rrule: str | None,
    timezone: str | None,
    inputs: tuple[str, ...],
    job_variables: tuple[str, ...],
    heartbeat_frequency: int,
    heartbeat_timeout: float,
) -> None:
    """Create or update the Prefect deployment of PROCESS_ID.

    The deployment runs the process on a work pool's workers. Set the printed name as
    `processor.prefect.deployment` in the pygeoapi config so that jobs go to it.

    It also creates (or updates) the automation that marks jobs CRASHED whose flow runs
    stopped sending heartbeats, Prefect's detection of zombie flow runs.
    """
    config = _load_config(config_path)
    processes = _processes(config)
    if process_id not in processes:
        known = ", ".join(processes) or "none"
        raise click.ClickException(f"unknown process {process_id!r} (configured: {known})")
    resource = processes[process_id]
    settings = _process_settings(process_id, resource)
    pool = work_pool or settings.work_pool
    if not pool:
        raise click.UsageError("no work pool: give --work-pool or set processor.prefect.work_pool")
    if heartbeat_timeout <= heartbeat_frequency:
        raise click.UsageError(
            f"--heartbeat-timeout ({heartbeat_timeout:g} s) must be longer than "
            f"--heartbeat-frequency ({heartbeat_frequency} s)"
        )
    schedule = _schedule(cron, interval, rrule, timezone)
    schedule_inputs = _json_pairs(inputs, "input")
    if schedule_inputs and schedule is None:
        raise click.UsageError("--input sets the inputs of scheduled runs: give a schedule too")
    processor = _load_processor(process_id, resource["processor"])

    variables: dict[str, Any] = {**settings.job_variables, **_json_pairs(job_variables, "job")}
    env = variables.get("env", {})
    if not isinstance(env, dict):
        raise click.BadParameter("the `env` job variable must be a JSON object", param_hint="job")
    variables["env"] = {
        **_result_storage_env(config, settings),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_frequency),
        **env,
    }
    if isinstance(processor, BasePrefectProcessor):
        flow = type(processor).process_flow
        entrypoint = _entrypoint(flow, type(processor))
        parameters: dict[str, Any] = {}
    else:
        flow = run_pygeoapi_process
        entrypoint = "pygeoapi_prefect.flows.run_pygeoapi_process"
        parameters = {"process_id": process_id, "processor": resource["processor"]}
    deployment_name = name or (
        settings.deployment.split("/", 1)[1] if settings.deployment else process_id
    )

    url = _api_url(config, config_path)
    with _prefect_client(url) as client:
        click.echo(f"Checking work pool {pool!r} on the Prefect API at {url}...", err=True)
        try:
            client.read_work_pool(pool)
        except ObjectNotFound as err:
            raise click.ClickException(
                f"unknown work pool {pool!r} on the Prefect API at {url}: create it with "
                f"`prefect work-pool create {pool} --type process`"
            ) from err
        manager = _manager_settings(config)
        if not settings.result_storage and not manager.result_storage:
            # The manager's default local block, saved now so that the deployment can name it.
            try:
                ResultStorage(manager).block_for(url)
            except ValueError as err:  # output_dir is not a private directory of this user
                raise click.ClickException(str(err)) from err
        flow_id = client.create_flow_from_name(flow.name)
        schedules = []
        if schedule is not None:
            schedule_parameters = _scheduled_parameters(processor, parameters, schedule_inputs)
            schedules.append(
                DeploymentScheduleCreate(schedule=schedule, parameters=schedule_parameters)
            )
        click.echo(f"Creating deployment {flow.name}/{deployment_name}...", err=True)
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=deployment_name,
            entrypoint=entrypoint,
            work_pool_name=pool,
            work_queue_name=work_queue or settings.work_queue,
            concurrency_limit=settings.concurrency_limit,
            job_variables=variables,
            parameters=parameters,
            schedules=schedules,
            # Runs the schedule creates carry these tags too: they list as jobs of the process.
            tags=[JOB_TAG, server_tag(manager.server_label), process_tag(process_id)],
            pull_steps=[],
            enforce_parameter_schema=False,
        )
        click.echo(f"Ensuring automation {ZOMBIE_AUTOMATION!r}...", err=True)
        _ensure_zombie_automation(client, heartbeat_timeout)
    full_name = f"{flow.name}/{deployment_name}"
    click.echo(
        f"Deployed {process_id} as {full_name} ({deployment_id}) on work pool {pool} "
        f"of the Prefect API at {url}."
    )
    if settings.deployment != full_name:
        click.echo(
            f"Set `processor.prefect.deployment: {full_name}` for {process_id} in "
            f"{config_path} so that its jobs run there."
        )


@cli.command("worker")
@pygeoapi_config_option
@click.option("--work-pool", required=True, help="The process work pool to serve.")
@click.option("--work-queue", "work_queues", multiple=True, help="Only these queues.")
def worker(config_path: Path, work_pool: str, work_queues: tuple[str, ...]) -> None:
    """Start a local Prefect process worker for the configured processes (development).

    It is `prefect worker start --type process`, with PYGEOAPI_CONFIG set so that the
    deployed processes find their configuration, and PREFECT_API_URL the API the server
    uses. The command becomes the worker process: a signal (SIGTERM, Ctrl-C) reaches
    the worker itself, and nothing is left running once it has exited.
    """
    url = _api_url(_load_config(config_path), config_path)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent))
    if prefect is None:
        raise click.ClickException(f"no `prefect` command next to {sys.executable}")
    command = [prefect, "worker", "start", "--pool", work_pool, "--type", "process"]
    for queue in work_queues:
        command += ["--work-queue", queue]
    env = {
        **os.environ,
        "PYGEOAPI_CONFIG": str(config_path.resolve()),
        "PREFECT_API_URL": url,
    }
    click.echo(
        f"Starting a process worker for work pool {work_pool} of the Prefect API at {url}...",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(prefect, command, env)


@cli.command("serve")
@pygeoapi_config_option
@click.option(
    "--openapi",
    "openapi_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PYGEOAPI_OPENAPI",
    required=True,
    help="The OpenAPI document generated by `pygeoapi openapi generate` [env: PYGEOAPI_OPENAPI].",
)
def serve(config_path: Path, openapi_path: Path) -> None:
    """Serve pygeoapi in full conformance mode (job-list filters, dismiss, OGC exceptions).

    Same configuration as `pygeoapi serve`: host and port come from `server.bind`. Like
    `pygeoapi serve`, it runs Flask's development server; for production, serve
    `pygeoapi_prefect.app:create_app()` with a WSGI server.
    """
    os.environ["PYGEOAPI_CONFIG"] = str(config_path.resolve())
    os.environ["PYGEOAPI_OPENAPI"] = str(openapi_path.resolve())
    from pygeoapi_prefect.app import create_app

    try:
        app = create_app()
    except RuntimeError as err:
        raise click.ClickException(str(err)) from err
    bind = (_load_config(config_path).get("server") or {}).get("bind") or {}
    app.run(host=bind.get("host", "127.0.0.1"), port=int(bind.get("port", 5000)), threaded=True)
