"""Where the Prefect API is, and the one client the manager talks to it with.

Three cases, decided at first use (never at construction, which also runs inside
`pygeoapi openapi generate`):

1. `server.manager.connection` (or `prefect.api_url`) names an API URL;
2. else `PREFECT_API_URL` is set, as for any Prefect client;
3. else the embedded default: Prefect's own local API server (SQLite, started in a
   subprocess as Prefect's ephemeral mode does; see `embedded_api`).
"""

from __future__ import annotations

import logging
import random
import threading
import time

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from pygeoapi_prefect.errors import PrefectUnavailableError

__all__ = ["PrefectConnection"]

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


class PrefectConnection:
    """Lazily resolved Prefect API URL and a shared synchronous client.

    Args:
        api_url: An explicit API URL, or None to use PREFECT_API_URL or the embedded API.
    """

    def __init__(self, api_url: str | None = None) -> None:
        self._configured_url = api_url
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
            return str(url).rstrip("/")
        from pygeoapi_prefect.embedded_api import EmbeddedAPIServer

        LOGGER.info("No Prefect API configured: starting the embedded local Prefect API")
        server = EmbeddedAPIServer()
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
