"""Configuration of the manager and of each process, read from the pygeoapi config.

The manager block of a pygeoapi configuration looks like this:

```yaml
server:
  manager:
    name: pygeoapi_prefect.manager.PrefectManager
    connection: null            # null: PREFECT_API_URL, else the embedded default;
                                # or a Prefect API URL (http:// or https://);
                                # or a file path: the embedded default's SQLite database
    output_dir: ~/.prefect/pygeoapi-results
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

Both are read once, when the manager is constructed (as the server starts, and in
`pygeoapi openapi generate`) and by the `pygeoapi-prefect` commands: a value that does not
validate raises `ConfigError`, whose message names the setting and what it accepts.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["ConfigError", "ManagerSettings", "ProcessSettings", "process_settings_of"]

_CONNECTION_FORMS = (
    "null (PREFECT_API_URL, else the embedded default), a Prefect API URL "
    "(http:// or https://), or the path of a file where the embedded default keeps its "
    "Prefect database (SQLite)"
)
"""What `server.manager.connection` accepts, as error messages say it."""

_SQLITE_HEADER = b"SQLite format 3\x00"

_DURATION = re.compile(r"(?P<amount>[0-9]+)(?P<unit>[smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _dedup_value(value: Any) -> bool | timedelta:
    """Read `dedup`: a boolean, or a duration such as `30m`, `24h` or `7d`."""
    if isinstance(value, bool | timedelta):
        if isinstance(value, timedelta) and value <= timedelta(0):
            raise ValueError("a deduplication window must be longer than 0 s")
        return value
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is not None and int(match["amount"]) > 0:
            return timedelta(**{_DURATION_UNITS[match["unit"]]: int(match["amount"])})
    raise ValueError(
        "dedup is false, true, or a duration: a positive whole number followed by s, m, h "
        "or d, e.g. 30m, 24h, 7d"
    )


class ConfigError(ValueError):
    """A setting of the pygeoapi configuration that this package cannot use.

    Raised when the manager is constructed (so the server does not start) and by the
    command line; the message names the setting and what it accepts.
    """


def _describe(err: ValidationError, where: str, model: type[BaseModel]) -> str:
    """Say what is wrong with a mapping of settings, one clause per problem."""
    accepted = ", ".join(model.model_fields)
    problems = []
    for error in err.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}.{key}: unknown key; accepted keys: {accepted}")
        elif not key:
            problems.append(f"{where}: {error['msg']} (got {error['input']!r})")
        else:
            problems.append(f"{where}.{key}: {error['msg']} (got {error['input']!r})")
    return "; ".join(problems)


def process_settings_of(process_id: str, resource: dict[str, Any]) -> ProcessSettings:
    """Read the Prefect options of a configured process.

    The manager and the command line both read them through this function.

    Args:
        process_id: The resource id of the process.
        resource: Its resource mapping from the pygeoapi config (`type: process`).

    Returns:
        The validated options (defaults when `processor.prefect` is absent).

    Raises:
        ConfigError: If the options do not validate; the message names the resource,
            the key and what is accepted.
    """
    processor = resource.get("processor") or {}
    options = processor.get("prefect") if isinstance(processor, dict) else None
    try:
        return ProcessSettings.model_validate(options or {})
    except ValidationError as err:
        where = f"resources.{process_id}.processor.prefect"
        raise ConfigError(_describe(err, where, ProcessSettings)) from err


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _database_path(value: str | Path) -> Path:
    """Check a path for the embedded default's SQLite database; say what is wrong."""
    path = Path(value).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"its directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise ValueError("it is a directory")
    try:
        # SQLite writes a journal beside the file: the directory must take new files.
        descriptor, probe = tempfile.mkstemp(dir=parent, prefix=".pygeoapi-prefect-")
        os.close(descriptor)
        os.unlink(probe)
        if path.exists():
            with path.open("r+b") as handle:
                header = handle.read(len(_SQLITE_HEADER))
            if header and header != _SQLITE_HEADER:
                raise ValueError(
                    "the file exists and is not an SQLite database (a TinyDB manager's "
                    "file?): remove it or name another file"
                )
    except OSError as err:
        raise ValueError(f"it is not writable ({err.strerror})") from err
    return path.absolute()


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
    dedup: bool | timedelta = Field(
        default=False,
        description="Deduplicate this process's submissions: an execute request identical to "
        "an earlier one (same process and version, inputs, outputs and response) gets the "
        "earlier job instead of a new run, unless that job failed or was dismissed. `true`: "
        "any earlier job counts; a duration (`30m`, `24h`, `7d`): only one created within it.",
        examples=[True, "24h"],
    )

    @field_validator("dedup", mode="before")
    @classmethod
    def _dedup(cls, value: Any) -> bool | timedelta:
        return _dedup_value(value)

    @property
    def dedup_window(self) -> timedelta | None:
        """How long an earlier job counts for deduplication (None: forever, or dedup off)."""
        return self.dedup if isinstance(self.dedup, timedelta) else None


class ManagerSettings(BaseModel):
    """Options of the PrefectManager, read from `server.manager`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str | None = Field(
        default=None,
        description="Prefect API URL. When unset, PREFECT_API_URL is used, and without it the "
        "embedded default: Prefect's local SQLite API started by the pygeoapi process.",
        examples=["http://127.0.0.1:4200/api"],
    )
    database: Path | None = Field(
        default=None,
        description="Embedded default: the SQLite file of its Prefect database (a path as "
        "`server.manager.connection`, as pygeoapi's TinyDB manager takes one). When unset, "
        "Prefect's own setting (`PREFECT_SERVER_DATABASE_CONNECTION_URL`) applies.",
        examples=["/tmp/pygeoapi-process-manager.db"],
    )
    output_dir: Path = Field(
        default_factory=lambda: Path.home() / ".prefect" / "pygeoapi-results",
        description="Directory of the default local result storage (`server.manager.output_dir`), "
        "this user's own: created 0700 at start; one that another user owns or others may write "
        "is refused.",
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
        default=45,
        gt=0,
        description="Seconds a write to the Prefect API (creating a job, changing its state) "
        "may take, waiting for SQLite's lock and quick retries included (under the usual 60 s "
        "client timeout, long enough for a burst of jobs on SQLite); a request that needs "
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
    max_body_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest execute request body, in bytes, that full conformance mode "
        "(`pygeoapi-prefect serve`) accepts; larger ones get 413. By default what the "
        "Prefect API accepts as a job's parameters (its `server.api.max_parameter_size`, "
        "512 KiB unless set), or 5 MiB when that is unlimited.",
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
    server_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="This server's name among the pygeoapi servers that share a Prefect API. "
        "Every job it creates carries the tag `pygeoapi-server:<server_id>`, and it lists, "
        "reads, dismisses and removes only flow runs that carry that tag and the tag of one of "
        "its configured processes. Replicas of one deployment share it. When unset: a hash of "
        "the result storage (`result_storage`, or else `output_dir`), so servers that store "
        "results in the same place are one, and other servers keep apart.",
        examples=["maps-production"],
    )

    @field_validator("output_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not _is_url(value):
            raise ValueError("a Prefect API URL starts with http:// or https://")
        return value

    @field_validator("database")
    @classmethod
    def _writable(cls, value: Path | None) -> Path | None:
        return None if value is None else _database_path(value)

    @property
    def result_storage_slug(self) -> str:
        """The slug of the storage block results go to (the default one if none is set)."""
        if self.result_storage:
            return self.result_storage
        digest = hashlib.sha256(str(self.output_dir.expanduser().resolve()).encode()).hexdigest()
        return f"local-file-system/pygeoapi-prefect-results-{digest[:12]}"

    @property
    def server_label(self) -> str:
        """This server's id: `server_id`, or a hash of the result storage."""
        if self.server_id:
            return self.server_id
        return hashlib.sha256(self.result_storage_slug.encode()).hexdigest()[:12]

    @classmethod
    def from_manager_def(cls, manager_def: dict[str, Any]) -> ManagerSettings:
        """Read the settings from pygeoapi's `server.manager` mapping.

        `connection` is null, a Prefect API URL, a path (the embedded default's database)
        or a mapping of these settings; `prefect` holds the others.

        Args:
            manager_def: The mapping pygeoapi passes to the manager's constructor.

        Returns:
            The validated settings.

        Raises:
            ConfigError: If a setting does not validate; the message names it and what it
                accepts.
        """
        prefect = manager_def.get("prefect")
        if prefect is not None and not isinstance(prefect, dict):
            raise ConfigError(
                f"server.manager.prefect: {prefect!r} is not a mapping of settings; "
                f"accepted keys: {', '.join(cls.model_fields)}"
            )
        options: dict[str, Any] = dict(prefect or {})
        options.update(_connection_options(manager_def.get("connection"), options))
        if manager_def.get("output_dir"):
            options.setdefault("output_dir", manager_def["output_dir"])
        try:
            return cls.model_validate(options)
        except ValidationError as err:
            raise ConfigError(_describe(err, "server.manager.prefect", cls)) from err


def _connection_options(connection: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The settings `server.manager.connection` stands for (see `_CONNECTION_FORMS`)."""
    where = "server.manager.connection"
    if connection is None or connection == "":
        return {}
    if isinstance(connection, dict):
        unknown = sorted(str(key) for key in connection if key not in ManagerSettings.model_fields)
        if unknown:
            raise ConfigError(
                f"{where}: unknown keys {', '.join(unknown)}; it accepts {_CONNECTION_FORMS}, "
                f"or a mapping of the manager's settings"
            )
        return {key: value for key, value in connection.items() if key not in options}
    if isinstance(connection, str):
        if _is_url(connection):
            return {} if "api_url" in options else {"api_url": connection}
        if "://" in connection:
            raise ConfigError(
                f"{where}: {connection!r} is not accepted; it accepts {_CONNECTION_FORMS}"
            )
        try:
            path = _database_path(connection)
        except ValueError as err:
            raise ConfigError(
                f"{where}: the database file {connection!r} cannot be used: {err}; "
                f"it accepts {_CONNECTION_FORMS}"
            ) from err
        return {} if "database" in options else {"database": path}
    raise ConfigError(f"{where}: {connection!r} is not accepted; it accepts {_CONNECTION_FORMS}")
