"""Checklist I: the job list class (/conf/job-list)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conformance.conftest import (
    CONF,
    EXC,
    SLOW_PAUSE,
    STATUS,
    Api,
    check_exception,
    check_status_info,
    duration,
    job_id_of,
    link,
    links,
    modes,
    parse_time,
    query_of,
    rfc3339,
    seeds_of,
)

NO_FILTERS = "GET /jobs passes no filters to the manager (processID/status/type/datetime/duration)"
INVALID = EXC + "invalid-query-parameter-value"


@modes(stock="/conformance does not declare job-list")
def test_joblist_declared(api: Api) -> None:
    assert CONF + "job-list" in api.get("/conformance").json()["conformsTo"]


@modes()
def test_joblist_list(api: Api) -> None:
    seeds_of(api)
    response = api.get("/jobs")
    assert response.status_code == 200
    doc = response.json()
    assert isinstance(doc["jobs"], list) and doc["jobs"]
    assert isinstance(doc["links"], list)
    assert links(doc, "self")
    for job in doc["jobs"]:
        check_status_info(job)
        assert isinstance(job["processID"], str)
        assert job["type"] == "process"


@modes()
def test_joblist_html_alternate(api: Api) -> None:
    doc = api.get("/jobs").json()
    html = [item for item in links(doc, "alternate") if item.get("type") == "text/html"]
    assert html
    response = api.http.get(html[0]["href"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


@modes(stock="the job list has no numberMatched")
def test_joblist_number_matched(api: Api) -> None:
    seeds_of(api)
    ids, pages = api.walk({"limit": 7})
    for page in pages:
        assert page["numberMatched"] == len(ids)
    filtered, pages = api.walk({"processID": "fail", "limit": 2})
    assert pages[0]["numberMatched"] == len(filtered)


@modes(stock=NO_FILTERS)
def test_joblist_process_id(api: Api) -> None:
    seeds = seeds_of(api)
    jobs = api.all_jobs({"processID": "fail"})
    assert jobs and all(job["processID"] == "fail" for job in jobs)
    assert seeds.failed in {job_id_of(job) for job in jobs}


@modes(stock=NO_FILTERS)
def test_joblist_process_id_union(api: Api) -> None:
    seeds = seeds_of(api)
    fail = {job_id_of(j) for j in api.all_jobs({"processID": "fail"})}
    words = {job_id_of(j) for j in api.all_jobs({"processID": "word-stats"})}
    comma = {job_id_of(j) for j in api.all_jobs({"processID": "fail,word-stats"})}
    page = api.jobs_page([("processID", "fail"), ("processID", "word-stats"), ("limit", "1000")])
    repeated = {job_id_of(j) for j in page["jobs"]}
    assert {seeds.failed, seeds.words} <= fail | words
    assert all(j["processID"] in {"fail", "word-stats"} for j in page["jobs"])
    assert comma == repeated == fail | words


@modes(stock=NO_FILTERS)
def test_joblist_unknown_process_id_is_empty(api: Api) -> None:
    seeds_of(api)
    response = api.get("/jobs", params={"processID": "no-such-process"})
    assert response.status_code == 200
    assert response.json()["jobs"] == []


@modes(stock=NO_FILTERS)
@pytest.mark.parametrize(
    "statuses", ["successful", "failed", "dismissed", "running,accepted", "failed,dismissed"]
)
def test_joblist_status(api: Api, statuses: str) -> None:
    seeds = seeds_of(api)
    wanted = set(statuses.split(","))
    jobs = api.all_jobs({"status": statuses})
    assert all(job["status"] in wanted for job in jobs), [j["status"] for j in jobs]
    ids = {job_id_of(job) for job in jobs}
    for job_id, doc in seeds.docs.items():
        if doc["status"] in wanted:
            assert job_id in ids, doc


@modes(stock=NO_FILTERS)
def test_joblist_status_running(api: Api) -> None:
    seeds_of(api)
    job_id = api.submit("echo", {"echoInput": "running", "pause": SLOW_PAUSE})
    try:
        api.wait_status(job_id, {"running"})
        jobs = api.all_jobs({"status": "running"})
        assert job_id in {job_id_of(job) for job in jobs}
        assert all(job["status"] == "running" for job in jobs)
    finally:
        api.delete(f"/jobs/{job_id}")


@modes()
def test_joblist_without_status_lists_finished_jobs(api: Api) -> None:
    seeds = seeds_of(api)
    ids = {job_id_of(job) for job in api.all_jobs()}
    assert {seeds.failed, seeds.dismissed, *seeds.echo} <= ids


@modes()
def test_joblist_type(api: Api) -> None:
    seeds_of(api)
    jobs = api.all_jobs({"type": "process"})
    assert jobs and all(job["type"] == "process" for job in jobs)


@modes(stock=NO_FILTERS)
@pytest.mark.parametrize("form", ["instant", "closed", "open-start", "open-end", "empty-end"])
def test_joblist_datetime(api: Api, form: str) -> None:
    seeds = seeds_of(api)
    window = seeds.window()
    first = parse_time(seeds.docs[window[0]]["created"])
    last = parse_time(seeds.docs[window[-1]]["created"])
    value, low, high = {
        "instant": (rfc3339(first), first, first),
        "closed": (f"{rfc3339(first)}/{rfc3339(last)}", first, last),
        "open-start": (f"../{rfc3339(last)}", None, last),
        "open-end": (f"{rfc3339(first)}/..", first, None),
        "empty-end": (f"{rfc3339(first)}/", first, None),
    }[form]
    jobs = api.all_jobs({"datetime": value})
    assert jobs, value
    for job in jobs:
        created = parse_time(job["created"])
        assert low is None or created >= low, (value, job["created"])
        assert high is None or created <= high, (value, job["created"])
    ids = {job_id_of(job) for job in jobs}
    expected = {
        job_id
        for job_id in seeds.ids()
        if (low is None or parse_time(seeds.docs[job_id]["created"]) >= low)
        and (high is None or parse_time(seeds.docs[job_id]["created"]) <= high)
    }
    assert expected <= ids, (value, expected - ids)


@modes(stock=NO_FILTERS)
@pytest.mark.parametrize(
    "params", [{"minDuration": 2}, {"maxDuration": 1}, {"minDuration": 1, "maxDuration": 60}]
)
def test_joblist_duration(api: Api, params: dict[str, int]) -> None:
    seeds = seeds_of(api)
    low, high = params.get("minDuration"), params.get("maxDuration")
    jobs = api.all_jobs(params)
    for job in jobs:
        took = duration(job)
        assert took is not None, job
        assert low is None or took >= low - 0.01, (params, took, job)
        if job.get("finished"):
            assert high is None or took <= high + 0.01, (params, took, job)
    ids = {job_id_of(job) for job in jobs}
    long = seeds.docs[seeds.long]
    took = duration(long)
    assert took is not None and took >= 2.5
    inside = (low is None or took >= low) and (high is None or took <= high)
    assert (seeds.long in ids) == inside, (params, took)


@modes()
def test_joblist_limit(api: Api) -> None:
    seeds_of(api)
    response = api.get("/jobs", params={"limit": 1})
    assert response.status_code == 200
    assert len(response.json()["jobs"]) == 1
    check_exception(api.get("/jobs", params={"limit": 0}), 400)
    big = api.get("/jobs", params={"limit": 100000})
    assert big.status_code in (200, 400)


@modes(stock="invalid job-list parameters are ignored or answered with short-code exceptions")
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"status": "bogus"},
        {"status": "successful,bogus"},
        {"type": "bogus"},
        {"datetime": "garbage"},
        {"datetime": "2020-13-45T00:00:00Z"},
        {"datetime": "2020-01-01T00:00:00Z/garbage"},
        {"minDuration": "-1"},
        {"minDuration": "abc"},
        {"maxDuration": "1.5x"},
    ],
    ids=lambda params: "-".join(f"{k}={v}" for k, v in params.items()),
)
def test_joblist_invalid_values(api: Api, params: dict[str, str]) -> None:
    check_exception(api.get("/jobs", params=params), 400, INVALID)


@modes()
@pytest.mark.parametrize("limit", [1, 2, 5])
def test_joblist_paging(api: Api, limit: int) -> None:
    seeds_of(api)
    everything = [job_id_of(job) for job in api.all_jobs()]
    ids, pages = api.walk({"limit": limit})
    assert len(ids) == len(set(ids)), "a job on two pages"
    assert set(ids) == set(everything)
    assert all(len(page["jobs"]) <= limit for page in pages)
    assert link(pages[-1], "next") is None


@pytest.mark.parametrize("mode", ["full"])  # stock re-sorts each page by `started`
@pytest.mark.parametrize("limit", [1, 3])
def test_joblist_paging_order(api: Api, limit: int) -> None:
    """Checklist 87: pages follow the order of one big page."""
    seeds_of(api)
    everything = [job_id_of(job) for job in api.all_jobs()]
    assert api.walk({"limit": limit})[0] == everything


@modes(stock=NO_FILTERS)
def test_joblist_paging_keeps_filters(api: Api) -> None:
    seeds_of(api)
    params = {"processID": "echo,fail", "status": "successful,failed", "limit": 2}
    ids, pages = api.walk(params)
    for page in pages[:-1]:
        query = dict(query_of(link(page, "next")["href"]))  # type: ignore[index]
        assert query.get("processID") == "echo,fail", query
        assert set(query.get("status", "").split(",")) == {"successful", "failed"}, query
    expected = [
        job_id_of(j) for j in api.all_jobs({k: v for k, v in params.items() if k != "limit"})
    ]
    assert ids == expected
    for page in pages:
        for job in page["jobs"]:
            assert job["processID"] in {"echo", "fail"} and job["status"] in {
                "successful",
                "failed",
            }


@modes()
def test_joblist_prev_links(api: Api) -> None:
    seeds_of(api)
    forward, pages = api.walk({"limit": 3})
    assert len(pages) > 1
    backward: list[str] = []
    page = pages[-1]
    backward = [job_id_of(j) for j in page["jobs"]]
    steps = 0
    while (prev := link(page, "prev")) is not None:
        steps += 1
        assert steps <= len(pages)
        page = api.jobs_page(url=prev["href"])
        backward = [job_id_of(j) for j in page["jobs"]] + backward
    assert backward == forward


@modes(stock=NO_FILTERS)
def test_joblist_filters_combine(api: Api) -> None:
    seeds = seeds_of(api)
    jobs = api.all_jobs({"processID": "fail", "status": "failed"})
    assert seeds.failed in {job_id_of(j) for j in jobs}
    assert all(j["processID"] == "fail" and j["status"] == "failed" for j in jobs)
    assert api.all_jobs({"processID": "fail", "status": "dismissed"}) == []


@modes()
def test_joblist_order_is_stable(api: Api) -> None:
    seeds_of(api)
    assert api.walk({"limit": 4})[0] == api.walk({"limit": 4})[0]


@modes()
def test_joblist_statuses_are_known(api: Api) -> None:
    for job in api.all_jobs():
        assert job["status"] in STATUS


@modes(stock=NO_FILTERS)
def test_joblist_datetime_excludes_outside(api: Api) -> None:
    seeds = seeds_of(api)
    created = parse_time(seeds.docs[seeds.after]["created"])
    later = created + timedelta(milliseconds=1)
    jobs = api.all_jobs({"datetime": f"{rfc3339(later)}/.."})
    assert seeds.after not in {job_id_of(j) for j in jobs}
    assert all(parse_time(j["created"]) >= later for j in jobs)
