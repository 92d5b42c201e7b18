"""Configuration of the manager and of each process, read from the pygeoapi config.

The manager block of a pygeoapi configuration looks like this:

```yaml
server:
  manager:
    name: pygeoapi_prefect.manager.PrefectManager
    connection: null            # Prefect API URL; null: PREFECT_API_URL or the embedded default
    output_dir: /tmp/pygeoapi-prefect/results
    prefect:                    # optional, see ManagerSettings
      result_storage: local-file-system/pygeoapi-results
      sync_timeout: 300
```

and a process may carry Prefect options under its processor definition:

```yaml
resources:
  echo:
    type: process
    processor:
      name: pygeoapi_prefect.examples.echo.EchoProcessor
      prefect:
        tags: [demo]
        timeout: 60
```
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ManagerSettings", "ProcessSettings"]


class ProcessSettings(BaseModel):
    """Prefect options of one process (`resources.<id>.processor.prefect`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: str | None = Field(
        default=None,
        description="Name of a Prefect deployment (`flow-name/deployment-name`) that runs this "
        "process. When unset, jobs run on the manager's embedded runner.",
        examples=["echo/echo-on-workers"],
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a job may run before Prefect fails it (the flow's timeout).",
    )
    retries: int = Field(default=0, ge=0, description="How many times Prefect retries a job.")
    retry_delay: float = Field(default=0, ge=0, description="Seconds between retries.")
    tags: list[str] = Field(
        default_factory=list, description="Extra Prefect tags put on every job of this process."
    )
    concurrency_limit: int | None = Field(
        default=None,
        gt=0,
        description="The most jobs of this process running at once; further jobs stay "
        "accepted until one ends. The embedded runner enforces it, and `deploy-process` makes "
        "it the deployment's concurrency limit for workers.",
    )
    work_pool: str | None = Field(
        default=None, description="Work pool of the deployment (used by `deploy-process`)."
    )
    work_queue: str | None = Field(
        default=None,
        description="Work queue within the work pool; queue priority routes urgent jobs.",
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Job variables for the work pool (image, env, command, ...).",
        examples=[{"image": "ghcr.io/example/processes:1.0", "env": {"GDAL_CACHEMAX": "512"}}],
    )
    result_storage: str | None = Field(
        default=None,
        description="Slug of a Prefect storage block (`block-type/name`) for this process's "
        "results; the manager's setting when unset.",
    )


class ManagerSettings(BaseModel):
    """Options of the PrefectManager, read from `server.manager`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str | None = Field(
        default=None,
        description="Prefect API URL. When unset, PREFECT_API_URL is used, and without it the "
        "embedded default: Prefect's local SQLite API started by the pygeoapi process.",
        examples=["http://127.0.0.1:4200/api"],
    )
    output_dir: Path = Field(
        default_factory=lambda: Path.home() / ".prefect" / "pygeoapi-results",
        description="Directory of the default local result storage (`server.manager.output_dir`).",
    )
    result_storage: str | None = Field(
        default=None,
        description="Slug of a Prefect storage block where every job stores its results, e.g. "
        "an S3 bucket shared with remote workers. When unset the manager saves a "
        "local-file-system block `pygeoapi-prefect-results-<hash of output_dir>` pointing at "
        "`output_dir` (one per directory, so servers with different directories can share "
        "a Prefect API).",
        examples=["local-file-system/shared-results", "s3-bucket/pygeoapi-results"],
    )
    sync_timeout: float = Field(
        default=600,
        gt=0,
        description="Seconds a synchronous execute request waits for its job before answering "
        "with an error that says where to poll; the job carries on.",
    )
    direct_execution: bool = Field(
        default=True,
        description="Run a job of a stock pygeoapi processor that has no retries, timeout or "
        "subscriber without Prefect's flow engine, recording its flow run's states and result "
        "directly: synchronous jobs in the request's thread (as pygeoapi does; unless the "
        "process has a concurrency limit), asynchronous ones in their job process. False: "
        "every job runs in Prefect's flow engine in a job process of its own.",
    )
    max_running_jobs: int = Field(
        default_factory=lambda: 2 * (os.cpu_count() or 1),
        gt=0,
        description="Embedded default: the most job processes running at once (default twice "
        "the CPU count). Further jobs stay accepted (SCHEDULED) until a process ends.",
    )
    dismiss_wait: float = Field(
        default=15,
        ge=0,
        description="Seconds DELETE waits for a job run elsewhere (a worker, another replica) "
        "to stop; it answers `dismissed` either way, and the job ends CANCELLED.",
    )
    api_read_timeout: float = Field(
        default=5,
        gt=0,
        description="Seconds a query to the Prefect API (reading jobs, listing them) may take, "
        "quick retries included; a request that needs longer answers 503 with Retry-After. A "
        "job read waits at most this long for a batched read it shares with others.",
    )
    api_write_timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds a write to the Prefect API (creating a job, changing its state) "
        "may take, waiting for SQLite's lock and quick retries included; a request that needs "
        "longer answers 503 with Retry-After.",
    )
    recovery_interval: float = Field(
        default=30,
        gt=0,
        description="Embedded default: seconds between checks for jobs that a stopped pygeoapi "
        "process on this host left behind (started if they never ran, CRASHED if their process "
        "is gone, stopped if dismissed); the first check runs at the first use of the API.",
    )
    cancel_grace: float = Field(
        default=2,
        ge=0,
        description="Seconds a dismissed job's process gets after SIGTERM before SIGKILL.",
    )
    tags: list[str] = Field(
        default_factory=list, description="Extra Prefect tags put on every job of this server."
    )
    max_body_bytes: int = Field(
        default=5 * 1024 * 1024,
        gt=0,
        description="Largest execute request body, in bytes, that full conformance mode "
        "(`pygeoapi-prefect serve`) accepts; larger ones get 413.",
    )
    callback_allow: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR) or host names that subscriber callbacks may reach even "
        "though they are loopback, private, link-local or otherwise internal.",
        examples=[["127.0.0.1/32", "hooks.internal.example"]],
    )
    ui_url: str | None = Field(
        default=None,
        description="Base URL of the Prefect UI, used to link a job to its flow-run page.",
        examples=["http://127.0.0.1:4200"],
    )

    @field_validator("output_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) else value

    @property
    def result_storage_slug(self) -> str:
        """The slug of the storage block results go to (the default one if none is set)."""
        if self.result_storage:
            return self.result_storage
        digest = hashlib.sha256(str(self.output_dir.expanduser().resolve()).encode()).hexdigest()
        return f"local-file-system/pygeoapi-prefect-results-{digest[:12]}"

    @classmethod
    def from_manager_def(cls, manager_def: dict[str, Any]) -> ManagerSettings:
        """Read the settings from pygeoapi's `server.manager` mapping.

        Args:
            manager_def: The mapping pygeoapi passes to the manager's constructor.

        Returns:
            The validated settings.
        """
        options: dict[str, Any] = dict(manager_def.get("prefect") or {})
        connection = manager_def.get("connection")
        if isinstance(connection, str) and connection:
            options.setdefault("api_url", connection)
        elif isinstance(connection, dict):
            options = {**connection, **options}
        if manager_def.get("output_dir"):
            options.setdefault("output_dir", manager_def["output_dir"])
        return cls.model_validate(options)
