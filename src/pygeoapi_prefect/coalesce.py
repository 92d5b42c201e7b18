"""Concurrent reads of single jobs, served by one Prefect query per batch.

Clients poll `GET /jobs/{id}`, often many at once. Each poll alone would cost a Prefect
API request (and one more for a running job's progress), and on the embedded SQLite API
these reads compete with the jobs' own writes. `CoalescingReader` sends whatever reads are
waiting as one batched query: while one batch is in flight, new requests queue up, and the
next batch takes them all. An idle server answers a lone read at once; a busy one sends
fewer, larger queries.

A batched read that fails in a way one item can cause (`split_on`) is read again in
halves, down to one read per item (`read_one`): an item that breaks the batched query
(the Prefect API fails to encode a flow run whose parameters nest too deeply) fails only
its own readers, or none when `read_one` can still read it. Other failures (the API cannot
be reached) fail the whole batch at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
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
        read_one: Reads one key on its own (None when it is not found), for a key whose
            batched read fails; by default `read_many` of that key alone.
        split_on: Whether an error of `read_many` may come from one of its keys: then the
            batch is read again in halves, down to single keys. By default no error is
            (the whole batch fails).
    """

    def __init__(
        self,
        read_many: Callable[[list[K]], Mapping[K, V]],
        max_batch: int = 200,
        *,
        read_one: Callable[[K], V | None] | None = None,
        split_on: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._read_many = read_many
        self._max_batch = max_batch
        self._read_one = read_one
        self._split_on = split_on
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
            found, failed = self._read(list(dict.fromkeys(r.key for r in batch)))
            for request in batch:
                request.value = found.get(request.key)
                request.error = failed.get(request.key)
                request.done.set()

    def _read(self, keys: Sequence[K]) -> tuple[dict[K, V], dict[K, BaseException]]:
        """Read keys in one batch, or in smaller ones when the batch fails (`split_on`)."""
        try:
            return dict(self._read_many(list(keys))), {}
        except BaseException as err:  # handed to the readers of these keys
            if self._split_on is None or not self._split_on(err):
                return {}, dict.fromkeys(keys, err)
            if len(keys) == 1:
                return self._read_alone(keys[0], err)
            half = len(keys) // 2
            found, failed = self._read(keys[:half])
            more_found, more_failed = self._read(keys[half:])
            return {**found, **more_found}, {**failed, **more_failed}

    def _read_alone(
        self, key: K, batch_error: BaseException
    ) -> tuple[dict[K, V], dict[K, BaseException]]:
        """Read a key whose batched read failed with `read_one`, if there is one."""
        if self._read_one is None:
            return {}, {key: batch_error}
        try:
            value = self._read_one(key)
        except BaseException as err:
            return {}, {key: err}
        return ({} if value is None else {key: value}), {}
