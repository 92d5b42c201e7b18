"""Property tests of the job-list filters against the full-mode server (checklist I)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conformance.conftest import (
    STATUS,
    TERMINAL,
    Api,
    duration,
    full_only,
    job_id_of,
    parse_time,
    rfc3339,
    seeds_of,
)

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)

FEW = {"processID": "fail,word-stats"}
"""A filter that keeps the paged set small (the seeds' failed and word-stats jobs, a few more)."""


@full_only
@SETTINGS
@given(statuses=st.sets(st.sampled_from(sorted(STATUS)), min_size=1))
def test_props_joblist_status_subset(api: Api, statuses: set[str]) -> None:
    seeds_of(api)
    before = api.all_jobs()
    jobs = api.all_jobs({"status": ",".join(sorted(statuses))})
    assert all(job["status"] in statuses for job in jobs)
    returned = {job_id_of(job) for job in jobs}
    for job in before:
        # Terminal states do not change, so these must be listed.
        if job["status"] in TERMINAL and job["status"] in statuses:
            assert job_id_of(job) in returned, job


@full_only
@SETTINGS
@given(limit=st.integers(min_value=1, max_value=20))
def test_props_joblist_pages_walk_one_big_page(api: Api, limit: int) -> None:
    seeds_of(api)
    everything = [job_id_of(job) for job in api.all_jobs(FEW)]
    ids, pages = api.walk({**FEW, "limit": limit})
    assert ids == everything
    assert all(len(page["jobs"]) <= limit for page in pages)
    assert all(page.get("numberMatched") == len(everything) for page in pages)


def _bound(seeds_created: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.tuples(st.sampled_from(seeds_created), st.integers(min_value=-1500, max_value=1500)).map(
            lambda pair: pair[0] + timedelta(milliseconds=pair[1])
        ),
    )


@full_only
@SETTINGS
@given(data=st.data())
def test_props_joblist_datetime_interval(api: Api, data: st.DataObject) -> None:
    seeds = seeds_of(api)
    created = sorted(parse_time(seeds.docs[job_id]["created"]) for job_id in seeds.ids())
    low = data.draw(_bound(created), label="start")
    high = data.draw(_bound(created), label="end")
    if low is not None and high is not None and low > high:
        low, high = high, low
    open_start = data.draw(st.sampled_from(["..", ""]), label="open start") if low is None else ""
    if low is None and high is None:
        value = data.draw(st.sampled_from([rfc3339(created[0])]), label="instant")
        low = high = created[0]
    else:
        start = rfc3339(low) if low is not None else (open_start or "..")
        end = rfc3339(high) if high is not None else data.draw(st.sampled_from(["..", ""]))
        value = f"{start}/{end}"
    everything = api.all_jobs()
    expected = {
        job_id_of(job)
        for job in everything
        if (low is None or parse_time(job["created"]) >= low)
        and (high is None or parse_time(job["created"]) <= high)
    }
    got = {job_id_of(job) for job in api.all_jobs({"datetime": value})}
    assert got == expected, (value, got ^ expected)


@full_only
@SETTINGS
@given(low=st.none() | st.integers(0, 4), high=st.none() | st.integers(0, 4))
def test_props_joblist_duration(api: Api, low: int | None, high: int | None) -> None:
    seeds_of(api)
    if low is not None and high is not None and low > high:
        low, high = high, low
    params = {
        key: value
        for key, value in (("minDuration", low), ("maxDuration", high))
        if value is not None
    }
    for job in api.all_jobs(params):
        took = duration(job)
        assert took is not None, job
        assert low is None or took >= low - 0.01, (params, took)
        if job.get("finished"):
            assert high is None or took <= high + 0.01, (params, took)
