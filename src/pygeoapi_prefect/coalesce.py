"""Concurrent reads of single jobs, served by one Prefect query per batch.

Clients poll `GET /jobs/{id}`, often many at once. Each poll alone would cost a Prefect
API request (and one more for a running job's progress), and on the embedded SQLite API
these reads compete with the jobs' own writes. `CoalescingReader` sends whatever reads are
waiting as one batched query: while one batch is in flight, new requests queue up, and the
next batch takes them all. An idle server answers a lone read at once; a busy one sends
fewer, larger queries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

__all__ = ["CoalescingReader"]


@dataclass
class _Request[K: Hashable, V]:
    key: K
    done: threading.Event = field(default_factory=threading.Event)
    value: V | None = None
    error: BaseException | None = None


class CoalescingReader[K: Hashable, V]:
    """Read items one by one from many threads, through batched reads.

    Args:
        read_many: Reads several keys at once; keys it cannot find are left out.
        max_batch: The most keys in one batched read.
    """

    def __init__(self, read_many: Callable[[list[K]], Mapping[K, V]], max_batch: int = 200) -> None:
        self._read_many = read_many
        self._max_batch = max_batch
        self._pending: list[_Request[K, V]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def read(self, key: K, timeout: float | None = None) -> V | None:
        """Read one item, in the next batch.

        Args:
            key: What to read.
            timeout: Seconds to wait for it at most (None: as long as the batches take).

        Returns:
            The item, or None when `read_many` did not find it.

        Raises:
            TimeoutError: If no batch answered within `timeout`.
            Exception: What `read_many` raised for the batch.
        """
        request: _Request[K, V] = _Request(key)
        with self._wake:
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="pygeoapi-prefect-reads", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        if not request.done.wait(timeout):
            raise TimeoutError(f"no answer within {timeout:g} s")
        if request.error is not None:
            raise request.error
        return request.value

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            try:
                found = self._read_many(list(dict.fromkeys(r.key for r in batch)))
            except BaseException as err:  # handed to every waiting reader
                for request in batch:
                    request.error = err
                    request.done.set()
                continue
            for request in batch:
                request.value = found.get(request.key)
                request.done.set()
