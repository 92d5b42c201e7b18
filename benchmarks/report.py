"""The table of figures, the targets, and the Markdown and JSON written from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _get(data: dict[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _ratio(ours: Any, tiny: Any) -> str:
    if isinstance(ours, int | float) and isinstance(tiny, int | float) and tiny:
        return f"{ours / tiny:.2f}x"
    return "n/a"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: TinyDB and ours medians, their ratio, the target and verdict."""
    tiny, ours = results["tinydb"], results["ours"]
    out: list[dict[str, Any]] = []

    def add(
        figure: str,
        unit: str,
        t: Any,
        o: Any,
        target: str = "",
        ok: bool | None = None,
        note: str = "",
    ) -> None:
        out.append(
            {
                "figure": figure,
                "unit": unit,
                "tinydb": t,
                "ours": o,
                "ratio": _ratio(o, t),
                "target": target,
                "met": _verdict(ok) if target else "",
                "note": note,
            }
        )

    def num(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) else None

    t1, o1 = num(_get(tiny, "sync", "median")), num(_get(ours, "sync", "median"))
    add(
        "1. sync execute hello-world",
        "ms",
        t1,
        o1,
        "ours <= 100 ms",
        None if o1 is None else o1 <= 100,
    )
    t2, o2 = num(_get(tiny, "async_submit", "median")), num(_get(ours, "async_submit", "median"))
    add(
        "2. async submit (201)",
        "ms",
        t2,
        o2,
        "ours <= 3x TinyDB",
        None if o2 is None or t2 is None else o2 <= 3 * t2,
    )
    t3 = num(_get(tiny, "submit_to_successful", "median"))
    o3 = num(_get(ours, "submit_to_successful", "median"))
    add(
        "3. submit -> successful (idle)",
        "ms",
        t3,
        o3,
        "ours <= 1000 ms",
        None if o3 is None else o3 <= 1000,
    )

    t4, o4 = (
        num(_get(tiny, "throughput", "jobs_per_s")),
        num(_get(ours, "throughput", "jobs_per_s")),
    )
    tp = _get(ours, "throughput") or {}
    total = tp.get("jobs", 200)
    all_ok = (
        tp.get("successful") == total and tp.get("lost") == 0 and tp.get("duplicated") == 0
        if tp and "error" not in tp
        else None
    )
    add(
        f"4. throughput, {total} jobs / 20 clients",
        "jobs/s",
        t4,
        o4,
        f">= 5 jobs/s, all {total} successful and listed",
        None if o4 is None or all_ok is None else (o4 >= 5 and all_ok),
        "ratio > 1 is better here",
    )
    for key, label in (
        ("successful", "successful"),
        ("lost", "lost in GET /jobs"),
        ("duplicated", "duplicated in GET /jobs"),
    ):
        add(
            f"4. {label}",
            f"of {total}",
            _get(tiny, "throughput", key),
            _get(ours, "throughput", key),
        )

    l100t = num(_get(tiny, "list_100", "list50", "median"))
    l100o = num(_get(ours, "list_100", "list50", "median"))
    l10kt = num(_get(tiny, "list_10k", "list50", "median"))
    l10ko = num(_get(ours, "list_10k", "list50", "median"))
    n_big = _get(ours, "list_10k", "jobs_in_store") or _get(tiny, "list_10k", "jobs_in_store")
    add("5. GET /jobs?limit=50, 100 jobs", "ms", l100t, l100o)
    add(
        f"5. GET /jobs?limit=50, {n_big or 10000} jobs",
        "ms",
        l10kt,
        l10ko,
        "ours <= 1.5x ours@100 and < TinyDB",
        None
        if l10ko is None or l100o is None or l10kt is None
        else (l10ko <= 1.5 * l100o and l10ko < l10kt),
    )
    add(
        "5. GET /jobs/{id}, 100 jobs",
        "ms",
        num(_get(tiny, "list_100", "get_one", "median")),
        num(_get(ours, "list_100", "get_one", "median")),
    )
    add(
        f"5. GET /jobs/{{id}}, {n_big or 10000} jobs",
        "ms",
        num(_get(tiny, "list_10k", "get_one", "median")),
        num(_get(ours, "list_10k", "get_one", "median")),
    )

    dis = _get(ours, "dismiss") or {}
    o6 = num(dis.get("dismissed_s"))
    gone = num(dis.get("process_gone_s"))
    ok6 = None
    if o6 is not None:
        ok6 = o6 <= 5 and (gone is None or gone <= 5)
    tdis = _get(tiny, "dismiss") or {}
    tnote = (
        f"TinyDB: after DELETE the job reads {' -> '.join(tdis.get('statuses_after_delete', []))}"
        f"; result file written anyway: {bool(tdis.get('result_file_after_delete'))}"
        if tdis and "error" not in tdis
        else ""
    )
    add(
        "6. dismiss running job -> dismissed",
        "s",
        num(tdis.get("dismissed_s")),
        o6,
        "ours <= 5 s, work stopped",
        ok6,
        tnote,
    )
    add("6. dismissed job's process gone", "s", None, gone)

    add(
        "7. RSS after throughput (process tree)",
        "MB",
        num(_get(tiny, "throughput", "memory", "rss_mb")),
        num(_get(ours, "throughput", "memory", "rss_mb")),
        note="sum of RSS over pygeoapi serve and all its descendants",
    )
    add(
        "7. USS after throughput (process tree)",
        "MB",
        num(_get(tiny, "throughput", "memory", "uss_mb")),
        num(_get(ours, "throughput", "memory", "uss_mb")),
    )
    add(
        "8. server start -> landing page answers",
        "s",
        num(_get(tiny, "cold_sync_ready_s")),
        num(_get(ours, "cold_sync_ready_s")),
        note="`pygeoapi serve` on a new database (ours: a fresh PREFECT_HOME), until GET / "
        "answers; ours answers once its Prefect API is up and its database migrated",
    )
    cold_sync = num(_get(ours, "cold_sync", "first_execute_s"))
    add(
        "8. first execute after start",
        "s",
        num(_get(tiny, "cold_sync", "first_execute_s")),
        cold_sync,
        "ours <= 2 s",
        None if cold_sync is None else cold_sync <= 2,
        "sync hello-world, sent as soon as a fresh server first answers its landing page",
    )
    cold_async = num(_get(ours, "cold_async", "successful_s"))
    add(
        "8. first async job after start",
        "s",
        num(_get(tiny, "cold_async", "successful_s")),
        cold_async,
        "ours <= 2 s",
        None if cold_async is None else cold_async <= 2,
        "from its submission until it reads successful, on another fresh server",
    )
    return out


def markdown(results: dict[str, Any], table: list[dict[str, Any]]) -> str:
    lines = [
        "# pygeoapi-prefect benchmark",
        "",
        f"Machine: {results['machine']['cpu_count']} cores (os.cpu_count()), "
        f"{results['machine']['platform']}; code {results['machine'].get('code')}; "
        f"run at {results['machine']['started']}, "
        f"total {results['total_s']:.0f} s.",
        "",
        "| figure | TinyDB median | ours median | ratio ours/TinyDB | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['figure']} | {_fmt(row['tinydb'], row['unit'])} | "
            f"{_fmt(row['ours'], row['unit'])} | {row['ratio']} | {row['target']} | "
            f"{row['met']} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {row['figure']}: {row['note']}" for row in table if row["note"]]
    lines += [f"- {note}" for note in results.get("notes", [])]
    errors = [
        f"{manager} / {name}: {value['error']}"
        for manager in ("tinydb", "ours")
        for name, value in results[manager].items()
        if isinstance(value, dict) and "error" in value
    ]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {error}" for error in errors]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], table: list[dict[str, Any]], text: str) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(text, encoding="utf-8")
    payload = {**results, "table": table}
    (RESULTS_DIR / "latest.json").write_text(
        json.dumps(payload, indent=2, default=str), encoding="utf-8"
    )
