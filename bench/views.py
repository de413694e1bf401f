"""Target 2 (issues 6 and 13): views of calls/active/list on the synthetic database, server
side, every answer computed (the response cache is off).

Server side = JsonApi.dispatch (parameters, cached auth, scope, the in-memory view or the SQL,
names, envelope), as the WSGI handler calls it, without the HTTP server. Each view twice:
unchanged data, and *changing*: before every timed request one call ends and a new one
starts, written as the recorder's store writes them (legs and change journal, one
transaction; untimed), so the view catches up on every answer. Baselines, same run: a
primary-key lookup of one leg through the same engine, and the same request answered by the
list's SQL (a second runtime on the same file with `memory_view = no`: the design before
issue 13).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import orjson
from sqlalchemy import bindparam, select

from bench.common import Results, check, median, percentile, timed_ms
from bench.synthetic import PASSWORD, SyntheticDb
from pbxcontrol.db import models

LEGS = models.Leg.__table__
OWN_VIEW = ("cust", "names=1")
RESELLER_VIEW = ("res", "customer=recursive;names=1")
SYSTEM_VIEW = ("admin", "customer=system;names=1;sort=snumber")


def _query(who: str, extra: str) -> str:
    return f"auth_username={who};auth_password={PASSWORD};{extra}"


def _runs_for(budget_s: float, one_ms: float, lo: int, hi: int) -> int:
    return int(max(lo, min(hi, budget_s * 1000 / max(one_ms, 0.001))))


def measure_view(
    api, who: str, extra: str, budget_s: float, hi: int = 2000, change=None
) -> tuple[list[float], int]:
    """Server-side times of one view (and its row count); with `change`, called untimed
    before every request."""
    q = _query(who, extra)

    def one() -> float:
        if change is not None:
            change()
        started = time.perf_counter()
        code, body = api.dispatch("calls/active/list", "GET", q, b"")
        took = (time.perf_counter() - started) * 1000
        assert code == 200, body
        return took

    one()
    code, body = api.dispatch("calls/active/list", "GET", q, b"")
    rows = len(orjson.loads(body)["data"])
    runs = _runs_for(budget_s, one(), 5, hi)
    for _ in range(2):
        one()
    return [one() for _ in range(runs)], rows


def pk_lookup(db: SyntheticDb, runs: int) -> list[float]:
    stmt = select(LEGS).where(LEGS.c.id == bindparam("id"))
    sessions = db.rt.sessions
    ids = iter(range(10**9))

    def one():
        with sessions() as s:
            s.execute(stmt, {"id": 1 + next(ids) % db.legs}).first()

    return timed_ms(one, runs, 20)


def run(results: Results, quick: bool) -> None:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    directory_rows = 100_000 if quick else 1_000_000
    budget = 1.0 if quick else 3.0
    with tempfile.TemporaryDirectory(prefix="pbx-bench-") as tmp:
        started = time.perf_counter()
        db = SyntheticDb(Path(tmp), directory_rows)
        sql = db.sql_runtime()
        results.info["synthetic_directory_rows"] = directory_rows
        print(
            f"  synthetic database: {directory_rows:,} directory rows "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        try:
            for size in sizes:
                db.grow_to(size)
                _one_size(results, db, sql.api, size, budget)
        finally:
            sql.close()
            db.close()


TARGETS = {  # issue 13: (size, view) -> p50 limit in ms, changing data
    (10_000, "own"): 1.0,
    (10_000, "system"): 25.0,
    (100_000, "system"): 250.0,
}
VIEWS = {"own": OWN_VIEW, "reseller_recursive": RESELLER_VIEW, "system": SYSTEM_VIEW}


def _one_size(results: Results, db: SyntheticDb, sql_api, size: int, budget: float) -> None:
    tag = f"legs_{size}"
    pk = median(pk_lookup(db, 2000))
    base = "primary-key lookup of one leg, same engine (views.pk_lookup_ms)"
    results.add(f"views.pk_lookup_ms.{tag}", pk, "ms")
    for name, (who, extra) in VIEWS.items():
        hi = 200 if name == "system" else 2000
        times, rows = measure_view(db.rt.api, who, extra, budget, hi)
        note = f"{rows} legs, {extra.replace(';', ' ')}, {len(times)} runs"
        results.add(
            f"views.{name}_p50_ms.{tag}",
            median(times),
            "ms",
            baseline=pk,
            baseline_name=base,
            note=f"unchanged data; {note}",
        )
        if name == "own":
            results.add(f"views.own_view_p99_ms.{tag}", percentile(times, 99), "ms")
        if name == "reseller_recursive":
            results.add(
                f"views.reseller_recursive_us_per_leg.{tag}",
                median(times) * 1000 / max(rows, 1),
                "us/leg",
                note="constant as the table grows = proportional to the result",
            )
        _changing(results, db, sql_api, name, size, budget, hi)


def _changing(results, db, sql_api, name: str, size: int, budget: float, hi: int) -> None:
    """The view while the data changes before every request, against the list's SQL."""
    tag = f"legs_{size}"
    who, extra = VIEWS[name]
    sql_hi = 20 if size >= 100_000 else hi
    sql_times, _ = measure_view(sql_api, who, extra, budget / 2, sql_hi, change=db.churn)
    times, rows = measure_view(db.rt.api, who, extra, budget, hi, change=db.churn)
    limit = TARGETS.get((size, name))
    p50 = median(times)
    results.add(
        f"views.{name}_changing_p50_ms.{tag}",
        p50,
        "ms",
        baseline=median(sql_times),
        baseline_name="the same request answered by the list's SQL (memory_view = no), "
        "data changing alike",
        target=f"<= {limit:g} ms" if limit else "",
        met=check(p50, "<=", limit) if limit else None,
        note=f"{rows} legs; a call ends and one starts before every request; "
        f"{len(times)} runs (SQL {len(sql_times)})",
    )
    if name == "own":
        results.add(f"views.own_changing_p99_ms.{tag}", percentile(times, 99), "ms")
