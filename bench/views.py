"""Target 2: filtered views of calls/active/list on the synthetic database, server side.

Server side = JsonApi.dispatch (parameters, cached auth, scope, query, names, envelope), as
the WSGI handler calls it, without the HTTP server. Baseline: a primary-key lookup of one leg
through the same engine and session factory, in the same run.
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
    db: SyntheticDb, who: str, extra: str, budget_s: float, hi: int = 2000
) -> tuple[list[float], int]:
    api = db.rt.api
    q = _query(who, extra)
    code, body = api.dispatch("calls/active/list", "GET", q, b"")
    assert code == 200, body
    rows = len(orjson.loads(body)["data"])
    started = time.perf_counter()
    api.dispatch("calls/active/list", "GET", q, b"")
    one = (time.perf_counter() - started) * 1000
    runs = _runs_for(budget_s, one, 5, hi)
    return timed_ms(lambda: api.dispatch("calls/active/list", "GET", q, b""), runs, 2), rows


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
        results.info["synthetic_directory_rows"] = directory_rows
        print(
            f"  synthetic database: {directory_rows:,} directory rows "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        try:
            for size in sizes:
                db.grow_to(size)
                _one_size(results, db, size, budget, quick)
        finally:
            db.close()


def _one_size(results: Results, db: SyntheticDb, size: int, budget: float, quick: bool) -> None:
    tag = f"legs_{size}"
    pk = median(pk_lookup(db, 2000))
    base = "primary-key lookup of one leg, same engine (views.pk_lookup_ms)"
    results.add(f"views.pk_lookup_ms.{tag}", pk, "ms")
    own, own_rows = measure_view(db, *OWN_VIEW, budget * (3 if size == 10_000 else 1))
    p50, p99 = median(own), percentile(own, 99)
    target = size == 10_000
    results.add(
        f"views.own_view_p50_ms.{tag}",
        p50,
        "ms",
        baseline=pk,
        baseline_name=base,
        target="<= 2 ms" if target else "",
        met=check(p50, "<=", 2) if target else None,
        note=f"{own_rows} legs, names=1, {len(own)} runs",
    )
    results.add(
        f"views.own_view_p99_ms.{tag}",
        p99,
        "ms",
        baseline=pk,
        baseline_name=base,
        target="<= 10 ms" if target else "",
        met=check(p99, "<=", 10) if target else None,
    )
    res, res_rows = measure_view(db, *RESELLER_VIEW, budget)
    p50 = median(res)
    results.add(
        f"views.reseller_recursive_p50_ms.{tag}",
        p50,
        "ms",
        baseline=pk,
        baseline_name=base,
        note=f"{res_rows} legs, names=1",
    )
    results.add(
        f"views.reseller_recursive_us_per_leg.{tag}",
        p50 * 1000 / max(res_rows, 1),
        "us/leg",
        note="constant as the table grows = proportional to the result",
    )
    system, system_rows = measure_view(db, *SYSTEM_VIEW, budget, hi=200)
    results.add(
        f"views.system_view_p50_ms.{tag}",
        median(system),
        "ms",
        baseline=pk,
        baseline_name=base,
        note=f"{system_rows} legs, names=1, sort=snumber, {len(system)} runs",
    )
