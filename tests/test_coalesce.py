"""Concurrent single-job reads share batched Prefect queries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
    """A read that no other read accompanies is sent on its own: it waits for no company."""
    batches: list[list[str]] = []

    def read_many(keys: list[str]) -> dict[str, int]:
        batches.append(keys)
        return dict.fromkeys(keys, 1)

    reader: CoalescingReader[str, int] = CoalescingReader(read_many)
    # One reader at a time: a reader that held a read back for a fuller batch times out.
    for key in "abc":
        assert reader.read(key, timeout=30) == 1
    assert batches == [["a"], ["b"], ["c"]]  # one query each, of its own key only


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


class Poisoned(Exception):
    pass


def poisoned_reader(
    batches: list[list[str]], read_one: Callable[[str], int | None] | None
) -> CoalescingReader[str, int]:
    """A reader whose batched reads fail whenever the key `poison` is among them."""

    def read_many(keys: list[str]) -> dict[str, int]:
        batches.append(keys)
        time.sleep(0.02)  # a query in flight: new reads queue up meanwhile
        if "poison" in keys:
            raise Poisoned("one key breaks the query")
        return {key: len(key) for key in keys if key != "missing"}

    return CoalescingReader(
        read_many, read_one=read_one, split_on=lambda err: isinstance(err, Poisoned)
    )


def test_a_key_that_breaks_its_batch_fails_only_its_own_readers() -> None:
    batches: list[list[str]] = []
    reader = poisoned_reader(batches, read_one=None)
    keys = [*(f"key-{n}" for n in range(60)), "poison", "missing"]

    def read(key: str) -> int | BaseException | None:
        try:
            return reader.read(key)
        except Poisoned as err:
            return err

    with ThreadPoolExecutor(max_workers=30) as pool:
        values = dict(zip(keys, pool.map(read, keys), strict=True))
    assert isinstance(values.pop("poison"), Poisoned)
    assert values == {**{key: len(key) for key in keys[:-2]}, "missing": None}
    assert ["poison"] in batches


def test_a_key_that_breaks_batched_reads_is_read_on_its_own() -> None:
    batches: list[list[str]] = []
    alone: list[str] = []

    def read_one(key: str) -> int | None:
        alone.append(key)
        return -1

    reader = poisoned_reader(batches, read_one)
    keys = [*(f"key-{n}" for n in range(60)), "poison"]
    with ThreadPoolExecutor(max_workers=30) as pool:
        values = list(pool.map(reader.read, keys))
    assert values == [*(len(key) for key in keys[:-1]), -1]
    assert alone == ["poison"]


def test_errors_that_no_single_key_causes_fail_the_batch_without_splitting() -> None:
    batches: list[list[str]] = []

    def read_many(keys: list[str]) -> dict[str, int]:
        batches.append(keys)
        time.sleep(0.02)
        raise ConnectionError("Prefect unreachable")

    reader: CoalescingReader[str, int] = CoalescingReader(
        read_many, read_one=len, split_on=lambda err: isinstance(err, Poisoned)
    )
    with ThreadPoolExecutor(max_workers=20) as pool:
        failures = list(pool.map(lambda key: _error_of(reader.read, key), map(str, range(40))))
    assert all(isinstance(err, ConnectionError) for err in failures)
    assert sum(len(batch) for batch in batches) == 40  # each key read once: no splitting


def _error_of(read: Callable[[str], object], key: str) -> BaseException | None:
    try:
        read(key)
    except Exception as err:
        return err
    return None
