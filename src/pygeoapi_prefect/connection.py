"""Where the Prefect API is, and the one client the manager talks to it with.

Three cases, decided at first use (never at construction, which also runs inside
`pygeoapi openapi generate`):

1. `server.manager.connection` (or `prefect.api_url`) names an API URL;
2. else `PREFECT_API_URL` is set, as for any Prefect client;
3. else the embedded default: Prefect's own local API server (SQLite, started in a
   subprocess as Prefect's ephemeral mode does; see `embedded_api`), its database at the
   path given as `server.manager.connection`, if any.

A configured URL is checked once, at first use (`check_api_url`): a URL that is a Prefect
server's address without its `/api` path would otherwise answer each request with a 404.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import (
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

from pygeoapi_prefect.errors import PrefectAPIURLError, PrefectUnavailableError

__all__ = ["PrefectConnection", "check_api_url"]

LOGGER = logging.getLogger(__name__)


class PrefectBusyError(httpx.TransportError):
    """The Prefect API stayed busy (503) for the whole retry budget."""


class _QuickRetryTransport(httpx.BaseTransport):
    """Retry the Prefect API's 503 answers within milliseconds, for a bounded time.

    A Prefect server on SQLite answers 503 when the database is locked by another writer
    (a job process recording its state). Prefect's client would then wait 2 s, 4 s, 8 s...
    A lock like that lasts milliseconds, so the web server retries quickly, with jitter so
    that concurrent requests do not retry in step, for up to `budget` seconds in all, and
    then gives up with `PrefectBusyError` (which Prefect's client does not retry again, so a
    request never waits longer than the budget, which stays under the usual 60 s client
    timeout). Requests that got a 503 were rolled back by the server, so sending them
    again is safe.
    """

    def __init__(self, budget: float = 45.0) -> None:
        self._inner = httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)
        )
        self._budget = budget

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self._budget
        delay = 0.01
        while True:
            response = self._inner.handle_request(request)
            if response.status_code != 503:
                return response
            response.read()
            response.close()
            pause = delay * random.uniform(0.5, 1.5)
            if time.monotonic() + pause > deadline:
                raise PrefectBusyError(
                    f"the Prefect API stayed busy for {self._budget:g} s", request=request
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

    Args:
        api_url: An explicit API URL, or None to use PREFECT_API_URL or the embedded API.
        database: The embedded API's SQLite file (None: Prefect's database setting).
    """

    def __init__(self, api_url: str | None = None, database: Path | None = None) -> None:
        self._configured_url = api_url
        self._database = database
        self._api_url: str | None = None
        self._client: SyncPrefectClient | None = None
        self._lock = threading.Lock()
        self.embedded = False
        self.ui_url: str | None = None
        """The embedded API's Prefect UI, once it serves one."""

    @property
    def api_url(self) -> str:
        """The URL of the Prefect API, starting the embedded API server if needed."""
        if self._api_url is None:
            with self._lock:
                if self._api_url is None:
                    self._api_url = self._resolve()
        return self._api_url

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
        from pygeoapi_prefect.embedded_api import EmbeddedAPIServer

        LOGGER.info("No Prefect API configured: starting the embedded local Prefect API")
        server = EmbeddedAPIServer()
        if not server.running:
            server.database = self._database
        try:
            server.start()
        except (RuntimeError, OSError) as err:
            raise PrefectUnavailableError(f"the embedded Prefect API did not start: {err}") from err
        self.embedded = True
        if server.ui_enabled:
            self.ui_url = server.address
            # (at WARNING, so that pygeoapi's default log level shows it)
            LOGGER.warning("The Prefect UI of this server's jobs: %s", server.address)
        return server.api_url

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
                        settings["transport"] = _QuickRetryTransport()
                    with temporary_settings(updates={PREFECT_API_URL: api_url}):
                        client = get_client(sync_client=True, httpx_settings=settings)
                    client.__enter__()
                    self._client = client
        return self._client

    def close(self) -> None:
        """Close the client; a later use opens a new one."""
        with self._lock:
            if self._client is not None:
                self._client.__exit__(None, None, None)
                self._client = None
