"""SPEC §14 (issue 25): the board at a past moment on ten million ended legs, server side, on
SQLite and on PostgreSQL (the harness's sandbox server, started if it is not running).

Server side = JsonApi.dispatch, as views.py measures it (parameters, cached auth, scope, the
SQL over history and live legs, names, envelope), the response cache off. Per engine:

1. The live list while calls change (before every request one call ends and one starts,
   written through the recorder's store: live table, history, journal), on two databases
   alike but for the history: one without any, one with the month; requests alternate
   between them, so the machine's other load falls on both alike. Target: within 10 %.
2. A customer's board at random moments of the month (`customer=ID;at=T;names=1`, asked by
   the system owner: the statement a customer's own person runs), random customers and the
   biggest one. Targets: p50 <= 10 ms, p99 <= 20 ms.
3. The system view at the surge's moment (10,000 legs live then, names=1). Target: 100 ms.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from bench import history_fill
from bench.common import ROOT, Results, check, median, percentile
from bench.history_live import LiveCalls
from pbxcontrol import config as config_mod
from pbxcontrol import runtime

CUSTOMER_P50, CUSTOMER_P99, SYSTEM_MS, LIVE_RATIO = 10.0, 20.0, 100.0, 1.10
SANDBOX = ROOT / "scripts" / "postgres-sandbox"


def run(results: Results, quick: bool) -> None:
    legs = 1_000_000 if quick else 10_000_000
    for engine in ("sqlite", "postgresql"):
        print(f"  -- {engine}", flush=True)
        with _databases(engine) as (plain_url, full_url):
            _one_engine(results, engine, plain_url, full_url, legs, quick)


def _one_engine(results, engine: str, plain_url: str, full_url: str, legs: int, quick) -> None:
    with tempfile.TemporaryDirectory(prefix="pbx-bench-history-") as tmp:
        plain = LiveCalls(_runtime(Path(tmp) / "plain", plain_url))
        full = LiveCalls(_runtime(Path(tmp) / "full", full_url))
        try:
            month, took = history_fill.fill(full.rt.engine, legs)
            print(f"  {legs:,} ended legs written in {took:.0f} s", flush=True)
            results.add(f"history.fill_s.{engine}", took, "s", note=f"{legs:,} ended legs")
            _live_changing(results, engine, plain, full, legs, quick)
            _customers(results, engine, full, month, quick)
            _system(results, engine, full, month, quick)
        finally:
            plain.close()
            full.close()


def _runtime(directory: Path, url: str) -> runtime.Runtime:
    directory.mkdir(parents=True)
    path = directory / "pbxcontrol.ini"
    path.write_text(
        f"[database]\nurl = {url}\n[http]\nhost = 127.0.0.1\nport = 0\n"
        "[logging]\nlevel = WARNING\n[plugins]\nenabled = active_calls\n"
        "[recorder]\nhistory_days = 31\n"  # the month and a day: every moment of it
        "[plugin:active_calls]\ncache_megabytes = 0\n"  # every answer computed
    )
    path.chmod(0o600)
    return runtime.build(config_mod.load(str(path)), record=False)


def _ask(api, query: str) -> tuple[float, int]:
    started = time.perf_counter()
    code, body = api.dispatch("calls/active/list", "GET", query, b"")
    took = (time.perf_counter() - started) * 1000
    answer = orjson.loads(body)
    assert code == 200 and answer["responses"][0]["code"] == "200", body[:300]
    data = answer["data"]
    return took, (data["count"] if isinstance(data, dict) else len(data))


def _live_changing(results, engine, plain: LiveCalls, full: LiveCalls, legs, quick) -> None:
    runs = 300 if quick else 1500
    for name, extra in (("own", "names=1"), ("system", "customer=system;names=1")):
        query = f"auth_username=admin;auth_password=pw;{extra}"
        if name == "own":
            query = f"auth_username=cust;auth_password=pw;{extra}"
        times: dict[str, list[float]] = {"plain": [], "full": []}
        for i in range(runs + 20):
            for label, calls in (("plain", plain), ("full", full)):
                calls.churn()
                took, rows = _ask(calls.rt.api, query)
                if i >= 20:  # after a warm-up
                    times[label].append(took)
        with_history, without = median(times["full"]), median(times["plain"])
        ratio = with_history / without
        results.add(
            f"history.live_{name}_changing_p50_ms.{engine}",
            with_history,
            "ms",
            baseline=without,
            baseline_name="the same live list on a database alike but without the history "
            "rows (requests alternating)",
            target=f"ratio <= {LIVE_RATIO:g}",
            met=ratio <= LIVE_RATIO,
            note=f"{rows} legs, {extra}; {legs:,} history rows; a call ends and one starts "
            f"before every request; {runs} runs each",
        )


def _customers(results, engine: str, full: LiveCalls, month, quick: bool) -> None:
    rnd = random.Random(14)
    runs = 500 if quick else 3000
    moments = [rnd.uniform(month.first + 86400, month.end - 60) for _ in range(runs)]
    biggest = history_fill.biggest_customer()
    for name, pick in (("random", lambda: rnd.randrange(22, 1001)), ("biggest", lambda: biggest)):
        times, sizes = [], []
        for at in moments:
            query = f"auth_username=admin;auth_password=pw;customer={pick()};names=1;at={at:.3f}"
            took, rows = _ask(full.rt.api, query)
            times.append(took)
            sizes.append(rows)
        p50, p99 = median(times), percentile(times, 99)
        note = (
            f"{runs} random moments of the month; legs listed: median {median(sizes):g}, "
            f"max {max(sizes)}"
        )
        results.add(
            f"history.at_{name}_customer_p50_ms.{engine}",
            p50,
            "ms",
            target=f"<= {CUSTOMER_P50:g} ms",
            met=check(p50, "<=", CUSTOMER_P50),
            note=note,
        )
        results.add(
            f"history.at_{name}_customer_p99_ms.{engine}",
            p99,
            "ms",
            target=f"<= {CUSTOMER_P99:g} ms",
            met=check(p99, "<=", CUSTOMER_P99),
            note=note,
        )


def _system(results, engine: str, full: LiveCalls, month, quick: bool) -> None:
    query = f"auth_username=admin;auth_password=pw;customer=system;names=1;at={month.surge_at}"
    for _ in range(3):
        _ask(full.rt.api, query)
    times, rows = [], 0
    for _ in range(10 if quick else 30):
        took, rows = _ask(full.rt.api, query)
        times.append(took)
    p50 = median(times)
    results.add(
        f"history.at_system_surge_p50_ms.{engine}",
        p50,
        "ms",
        target=f"<= {SYSTEM_MS:g} ms",
        met=check(p50, "<=", SYSTEM_MS),
        note=f"{rows} legs live at that moment (customer=system, names=1); max "
        f"{max(times):.1f} ms over {len(times)} runs",
    )


@contextmanager
def _databases(engine: str) -> Iterator[tuple[str, str]]:
    """Two new empty databases of `engine` (the runtime creates the schema)."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pbx-bench-history-db-") as tmp:
            yield f"sqlite:///{tmp}/plain.db", f"sqlite:///{tmp}/full.db"
        return
    with _postgres() as admin_url:
        names = [f"bench_history_{uuid.uuid4().hex[:8]}_{kind}" for kind in ("plain", "full")]
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f"CREATE DATABASE {name}"))
            urls = [make_url(admin_url).set(database=n) for n in names]
            plain, full = (u.render_as_string(hide_password=False) for u in urls)
            yield plain, full
        finally:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()


@contextmanager
def _postgres() -> Iterator[str]:
    """The PostgreSQL sandbox's URL; started if needed, and then stopped again at the end
    unless other databases (a test session's) are on it."""
    import subprocess

    def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SANDBOX), *args], capture_output=True, text=True)

    started = False
    if sandbox("status").returncode != 0:
        up = sandbox("up")
        assert up.returncode == 0, f"scripts/postgres-sandbox up failed: {up.stderr}"
        started = True
    url = sandbox("url").stdout.strip()
    try:
        yield url
    finally:
        if started:
            admin = create_engine(url, poolclass=NullPool)
            with admin.connect() as conn:
                others = conn.execute(
                    text("SELECT count(*) FROM pg_database WHERE datname ~ '^(t|tpl)_'")
                ).scalar()
            admin.dispose()
            if not others:
                sandbox("down")
