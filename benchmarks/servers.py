"""Configs, processes and their clean-up: everything the benchmark starts, it stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

TINYDB = "TinyDB"
OURS = "pygeoapi_prefect.manager.PrefectManager"

PROCESSES: dict[str, Any] = {
    "hello-world": {"type": "process", "processor": {"name": "HelloWorld"}},
    "echo": {"type": "process", "processor": {"name": "pygeoapi_prefect.examples.EchoProcessor"}},
}

_METADATA: dict[str, Any] = {
    "identification": {
        "title": {"en": "pygeoapi-prefect benchmark"},
        "description": {"en": "Benchmark server"},
        "keywords": {"en": ["processes"]},
        "keywords_type": "theme",
        "terms_of_service": "https://creativecommons.org/licenses/by/4.0/",
        "url": "https://example.org",
    },
    "license": {"name": "CC-BY 4.0 license", "url": "https://creativecommons.org/licenses/by/4.0/"},
    "provider": {"name": "pygeoapi-prefect", "url": "https://example.org"},
    "contact": {
        "name": "Operator, Example",
        "position": "Operator",
        "address": "Mailing Address",
        "city": "City",
        "stateorprovince": "Administrative Area",
        "postalcode": "Zip or Postal Code",
        "country": "Country",
        "phone": "+xx-xxx-xxx-xxxx",
        "fax": "+xx-xxx-xxx-xxxx",
        "email": "operator@example.org",
        "url": "https://example.org",
        "hours": "Mo-Fr 08:00-17:00",
        "instructions": "During hours of service.",
        "role": "pointOfContact",
    },
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    path: Path, manager: dict[str, Any], port: int, resources: dict[str, Any] | None = None
) -> Path:
    """Write a pygeoapi config with the benchmark's processes and generate its OpenAPI doc."""
    config = {
        "server": {
            "bind": {"host": "127.0.0.1", "port": port},
            "url": f"http://127.0.0.1:{port}",
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "gzip": False,
            "languages": ["en-US"],
            "cors": True,
            "pretty_print": False,
            "limits": {"default_items": 20, "max_items": 1000},
            "map": {
                "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                "attribution": "OpenStreetMap contributors",
            },
            "manager": manager,
            "admin": False,
        },
        "logging": {"level": "WARNING"},
        "metadata": _METADATA,
        "resources": PROCESSES if resources is None else resources,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    openapi = path.with_suffix(".openapi.yml")
    subprocess.run(
        [
            str(VENV_BIN / "pygeoapi"),
            "openapi",
            "generate",
            str(path),
            "--output-file",
            str(openapi),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env=clean_env({"PYGEOAPI_CONFIG": str(path)}),
    )
    return openapi


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The benchmark's environment without any Prefect or pygeoapi settings, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "PYGEOAPI_"))
    }
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.update(extra)
    return env


@dataclass
class Managed:
    """A process the benchmark started, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    base_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessRegistry:
    """Starts processes and stops every one of them (with their children) at the end."""

    def __init__(self) -> None:
        self.started: list[Managed] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], log: Path, base_url: str = ""
    ) -> Managed:
        handle = log.open("wb")
        try:
            popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            handle.close()
        managed = Managed(name=name, popen=popen, log=log, base_url=base_url)
        self.started.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 10.0) -> None:
        """Terminate a process, its process group and all its descendants; kill stragglers."""
        procs = managed.tree()
        if managed.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(managed.popen.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        try:
            managed.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            managed.popen.kill()
            managed.popen.wait(timeout=5)
        if managed in self.started:
            self.started.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self.started)):
            try:
                self.stop(managed)
            except Exception as err:
                print(f"  could not stop {managed.name}: {err!r}")


def wait_http(managed: Managed, url: str, timeout: float) -> float:
    """Wait until `url` answers 200; return the seconds it took."""
    start = time.perf_counter()
    deadline = start + timeout
    with httpx.Client(timeout=5) as client:
        while time.perf_counter() < deadline:
            if managed.popen.poll() is not None:
                raise RuntimeError(
                    f"{managed.name} exited with {managed.popen.returncode}:\n{managed.log_tail()}"
                )
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s:\n{managed.log_tail()}")


def start_pygeoapi(
    registry: ProcessRegistry,
    name: str,
    config: Path,
    openapi: Path,
    port: int,
    log: Path,
    env_extra: Mapping[str, str],
) -> Managed:
    env = clean_env({"PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi), **env_extra})
    managed = registry.start(
        name,
        [str(VENV_BIN / "pygeoapi"), "serve"],
        env,
        log,
        base_url=f"http://127.0.0.1:{port}",
    )
    # (a server of ours on a new database migrates it before it answers)
    managed.extra["ready_s"] = wait_http(managed, f"{managed.base_url}/", timeout=300)
    return managed


def start_prefect_server(registry: ProcessRegistry, home: Path, log: Path) -> Managed:
    port = free_port()
    env = clean_env({"PREFECT_HOME": str(home)})
    managed = registry.start(
        "prefect server",
        [
            str(VENV_BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--analytics-off",
        ],
        env,
        log,
        base_url=f"http://127.0.0.1:{port}/api",
    )
    managed.extra["ready_s"] = wait_http(managed, f"{managed.base_url}/health", timeout=120)
    return managed


def tree_memory(managed: Managed) -> dict[str, Any]:
    """RSS (and USS where readable) of a process and all its descendants."""
    total_rss = 0
    total_uss = 0
    procs = []
    for proc in managed.tree():
        try:
            info = proc.memory_full_info()
            cmd = " ".join(proc.cmdline()[1:4])[:80]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total_rss += info.rss
        total_uss += getattr(info, "uss", 0)
        procs.append({"pid": proc.pid, "cmd": cmd, "rss_mb": round(info.rss / 2**20, 1)})
    return {
        "rss_mb": round(total_rss / 2**20, 1),
        "uss_mb": round(total_uss / 2**20, 1),
        "processes": procs,
    }
