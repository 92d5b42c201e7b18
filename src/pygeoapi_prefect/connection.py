"""Where the Prefect API is, and the one client the manager talks to it with.

Three cases, decided at first use (never at construction, which also runs inside
`pygeoapi openapi generate`):

1. `server.manager.connection` (or `prefect.api_url`) names an API URL;
2. else `PREFECT_API_URL` is set, as for any Prefect client;
3. else the embedded default: Prefect's own local API server (SQLite, started in a
   subprocess as Prefect's ephemeral mode does; see `runtime.embedded_api`), its database at the
   path given as `server.manager.connection`, if any.

A configured URL is checked once, at first use (`check_api_url`): a URL that is a Prefect
server's address without its `/api` path would otherwise answer each request with a 404.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.context import refresh_global_settings_context
from prefect.settings import (
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

from pygeoapi_prefect.errors import PrefectAPIURLError, PrefectUnavailableError

if TYPE_CHECKING:
    from pygeoapi_prefect.runtime.embedded_api import EmbeddedAPIServer

__all__ = [
    "PrefectBusyError",
    "PrefectConnection",
    "PrefectDeadlineError",
    "check_api_url",
    "writes",
]

LOGGER = logging.getLogger(__name__)

_SUPERVISE_SECONDS = 0.5


class PrefectBusyError(httpx.TransportError):
    """The Prefect API stayed busy (503) for the whole of a request's deadline."""


class PrefectDeadlineError(httpx.TransportError):
    """The Prefect API did not answer (hung, or not accepting connections) within a deadline."""


_READ_SUFFIXES = ("/filter", "/count", "/paginate", "/history")


def writes(method: str, path: str) -> bool:
    """Whether a Prefect API request may write (Prefect's queries are POSTs that only read).

    Args:
        method: The HTTP method.
        path: The request path.

    Returns:
        False for GET, HEAD, OPTIONS and Prefect's `/filter`, `/count`, `/paginate` and
        `/history` queries; True otherwise.
    """
    if method in {"GET", "HEAD", "OPTIONS"}:
        return False
    return not (method == "POST" and path.rstrip("/").endswith(_READ_SUFFIXES))


_PHASES = ("connect", "read", "write", "pool")


class _QuickRetryTransport(httpx.BaseTransport):
    """Each request to the Prefect API within a deadline, with quick retries inside it.

    A Prefect server on SQLite answers 503 when the database is locked by another writer
    (a job process recording its state), and refuses connections while it restarts.
    Prefect's client would then wait 2 s, 4 s, 8 s... for five retries, and give each try
    its own 60 s timeout, so a hung API held a request for minutes. A lock lasts
    milliseconds, and a restart a few seconds, so the web server retries quickly, with
    jitter so that concurrent requests do not retry in step, until the request's deadline
    (`read_budget` for a query, `write_budget` for a write), which also bounds each try.
    It then gives up with `PrefectBusyError` or `PrefectDeadlineError`, which Prefect's
    client does not retry again. Requests that got a 503 were rolled back by the server,
    and refused connections never reached it, so sending them again is safe.
    """

    def __init__(self, read_budget: float, write_budget: float) -> None:
        self._inner = httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)
        )
        self._read_budget = read_budget
        self._write_budget = write_budget

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        write = writes(request.method, request.url.path)
        budget = self._write_budget if write else self._read_budget
        deadline = time.monotonic() + budget
        delay = 0.01
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            timeouts = dict.fromkeys(_PHASES, remaining)
            request.extensions = {**request.extensions, "timeout": timeouts}
            try:
                response = self._inner.handle_request(request)
            except httpx.TimeoutException as err:
                raise PrefectDeadlineError(
                    f"no answer from the Prefect API within {budget:g} s", request=request
                ) from err
            except (httpx.NetworkError, httpx.RemoteProtocolError) as err:
                # (refused while the API restarts, or a kept-alive connection it closed)
                busy: BaseException | None = err
            else:
                if response.status_code != 503:
                    return response
                response.read()
                response.close()
                busy = None
            pause = delay * random.uniform(0.5, 1.5)
            if time.monotonic() + pause > deadline:
                if busy is not None:
                    raise PrefectDeadlineError(
                        f"the Prefect API refused connections for {budget:g} s: {busy}",
                        request=request,
                    ) from busy
                raise PrefectBusyError(
                    f"the Prefect API stayed busy for {budget:g} s", request=request
                )
            time.sleep(pause)
            delay = min(2 * delay, 0.25)

    def close(self) -> None:
        self._inner.close()


def _answers_health(url: str, timeout: float) -> tuple[bool, int]:
    """Whether `<url>/health` answers `true`, as Prefect's API does, and its status."""
    response = httpx.get(
        f"{url}/health",
        timeout=timeout,
        verify=not PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value(),
    )
    try:
        healthy = response.status_code == 200 and response.json() is True
    except ValueError:  # not JSON: a web page (Prefect's UI answers any path with one)
        healthy = False
    return healthy, response.status_code


def check_api_url(url: str, timeout: float = 5.0) -> None:
    """Check that `url` is a Prefect API URL: `<url>/health` answers as Prefect's does.

    A URL that lacks its `/api` path is recognised by `<url>/api/health` answering, and the
    error says so. Answers that tell nothing about the URL (401, 5xx...) pass.

    Args:
        url: The Prefect API URL, without a trailing slash.
        timeout: Seconds to wait for each answer.

    Raises:
        PrefectAPIURLError: When `url` is not a Prefect API URL (the message names it).
        httpx.TransportError: When `url` cannot be reached.
    """
    healthy, status = _answers_health(url, timeout)
    if healthy or status not in (200, 404):
        return
    try:
        lacks_api, _ = _answers_health(f"{url}/api", timeout)
    except httpx.TransportError:
        lacks_api = False
    if lacks_api:
        raise PrefectAPIURLError(
            f"The Prefect API URL {url} lacks /api: {url}/api/health answers. Set "
            f"PREFECT_API_URL or server.manager.connection to {url}/api."
        )
    raise PrefectAPIURLError(
        f"The Prefect API URL {url} is not one: {url}/health answered HTTP {status}, not "
        "`true`. A Prefect API URL ends with /api, e.g. http://127.0.0.1:4200/api."
    )


class PrefectConnection:
    """Lazily resolved Prefect API URL and a shared synchronous client.

    With the embedded default, a supervisor thread restarts the embedded API when its
    process dies (on the same port, so job processes keep reporting to it), and tells
    `on_moved` listeners (the job launcher) if it had to move to another port.

    Args:
        api_url: An explicit API URL, or None to use PREFECT_API_URL or the embedded API.
        database: The embedded API's SQLite file (None: Prefect's database setting).
        read_timeout: Seconds a query to the Prefect API may take, retries included.
        write_timeout: Seconds a write to the Prefect API may take, retries included.
    """

    def __init__(
        self,
        api_url: str | None = None,
        database: Path | None = None,
        read_timeout: float = 5.0,
        write_timeout: float = 45.0,
    ) -> None:
        self._configured_url = api_url
        self._database = database
        self._api_url: str | None = None
        self._client: SyncPrefectClient | None = None
        self._lock = threading.Lock()
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._listeners: list[Callable[[str], None]] = []
        self._stopping = threading.Event()
        self.ui_url: str | None = None
        """The embedded API's Prefect UI, once it serves one."""
        self.auth_string: str | None = None
        """The embedded API's auth string (None for a configured API)."""

    @property
    def api_url(self) -> str:
        """The URL of the Prefect API, starting the embedded API server if needed."""
        if self._api_url is None:
            with self._lock:
                if self._api_url is None:
                    self._api_url = self._resolve()
        return self._api_url

    def on_moved(self, listener: Callable[[str], None]) -> None:
        """Call `listener` with the new URL whenever the embedded API restarts elsewhere.

        Args:
            listener: Called from the supervisor thread.
        """
        self._listeners.append(listener)

    def _resolve(self) -> str:
        url = self._configured_url or PREFECT_API_URL.value()
        if url:
            url = str(url).rstrip("/")
            try:
                check_api_url(url)
            except httpx.TransportError as err:
                raise PrefectUnavailableError(
                    f"cannot reach {url}: {type(err).__name__}: {err}"
                ) from err
            return url
        from pygeoapi_prefect.runtime.embedded_api import start_embedded_api

        LOGGER.info("No Prefect API configured: starting the embedded local Prefect API")
        try:
            server = start_embedded_api(self._database)
        except (RuntimeError, OSError) as err:
            raise PrefectUnavailableError(f"the embedded Prefect API did not start: {err}") from err
        if server.ui_enabled:
            self.ui_url = server.address
            # (at WARNING, so that pygeoapi's default log level shows it)
            LOGGER.warning("The Prefect UI of this server's jobs: %s", server.address)
        self.auth_string = server.auth_string
        # Every Prefect client of this process (the shared one, result storage blocks)
        # authenticates to it; the job launcher is handed the string explicitly.
        os.environ["PREFECT_API_AUTH_STRING"] = server.auth_string
        refresh_global_settings_context()
        atexit.register(self._stopping.set)  # (runs before Prefect's own stop of the server)
        threading.Thread(
            target=self._supervise, args=(server,), name="pygeoapi-prefect-api", daemon=True
        ).start()
        return server.api_url

    def _supervise(self, server: EmbeddedAPIServer) -> None:
        """Restart the embedded API whenever its process has exited."""
        while not self._stopping.wait(_SUPERVISE_SECONDS):
            process = server.server_process
            if process is None or process.poll() is None:
                continue
            LOGGER.warning(
                "The embedded Prefect API exited (code %s): restarting it", process.returncode
            )
            try:
                server.restart()
            except (RuntimeError, OSError):
                LOGGER.warning("Could not restart the embedded Prefect API", exc_info=True)
                continue
            finally:  # (again after Prefect's stop, which each start registers)
                atexit.unregister(self._stopping.set)
                atexit.register(self._stopping.set)
            if server.api_url != self._api_url:
                LOGGER.warning("The embedded Prefect API moved to %s", server.api_url)
                with self._lock:
                    self._api_url = server.api_url
                    # (dropped, not closed: other threads may still be using it)
                    self._client = None
                for listener in self._listeners:
                    listener(server.api_url)

    @property
    def client(self) -> SyncPrefectClient:
        """A synchronous Prefect client bound to `api_url`, shared by all threads."""
        if self._client is None:
            api_url = self.api_url
            with self._lock:
                if self._client is None:
                    settings: dict[str, object] = {}
                    if api_url.startswith("http://"):
                        # (over TLS, Prefect's own transport keeps its certificate settings)
                        settings["transport"] = _QuickRetryTransport(
                            self._read_timeout, self._write_timeout
                        )
                    else:
                        settings["timeout"] = httpx.Timeout(self._write_timeout)
                    with temporary_settings(updates={PREFECT_API_URL: api_url}):
                        client = get_client(sync_client=True, httpx_settings=settings)
                    client.__enter__()
                    self._client = client
        return self._client
