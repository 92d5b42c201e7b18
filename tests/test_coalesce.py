"""Concurrent single-job reads share batched Prefect queries."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pygeoapi_prefect.coalesce import CoalescingReader


def test_concurrent_reads_are_batched_and_each_gets_its_own_value() -> None:
    batches: list[list[int]] = []

    def read_many(keys: list[int]) -> dict[int, str]:
        batches.append(keys)
        time.sleep(0.05)  # a query in flight: new reads queue up meanwhile
        return {key: f"value-{key}" for key in keys if key % 10 != 0}

    reader: CoalescingReader[int, str] = CoalescingReader(read_many)
    with ThreadPoolExecutor(max_workers=40) as pool:
        values = list(pool.map(reader.read, range(1, 201)))
    assert values == [None if k % 10 == 0 else f"value-{k}" for k in range(1, 201)]
    assert sorted(k for batch in batches for k in batch) == list(range(1, 201))
    assert len(batches) < 50, f"{len(batches)} queries for 200 reads"


def test_a_lone_read_is_answered_at_once() -> None:
    reader: CoalescingReader[str, int] = CoalescingReader(lambda keys: dict.fromkeys(keys, 1))
    started = time.monotonic()
    assert reader.read("a") == 1
    assert time.monotonic() - started < 0.5


def test_a_failed_batch_fails_its_readers_and_the_next_batch_works() -> None:
    calls = threading.Event()

    def read_many(keys: list[str]) -> dict[str, int]:
        if not calls.is_set():
            calls.set()
            raise ConnectionError("Prefect unreachable")
        return dict.fromkeys(keys, 2)

    reader: CoalescingReader[str, int] = CoalescingReader(read_many)
    with pytest.raises(ConnectionError, match="unreachable"):
        reader.read("a")
    assert reader.read("b") == 2
