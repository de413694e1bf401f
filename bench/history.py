"""SPEC §14 (issue 25): the board at a past moment on ten million ended legs, server side, on
SQLite and on PostgreSQL (the harness's sandbox server, started if it is not running).

Server side = JsonApi.dispatch, as views.py measures it (parameters, cached auth, scope, the
SQL over history and live legs, names, envelope), the response cache off. Each figure twice:
wall-clock, and the CPU time the server spent (this process, and on PostgreSQL its backends):
on a machine shared with other work, the wall-clock also holds the time waiting for a core
(the load average is in each note). Per engine:

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
from pathlib import Path

import orjson

from bench import history_fill
from bench.common import Results, check, median, percentile
from bench.history_db import ServerClock, databases, load_average
from bench.history_live import LiveCalls
from pbxcontrol import config as config_mod
from pbxcontrol import runtime

CUSTOMER_P50, CUSTOMER_P99, SYSTEM_MS, LIVE_RATIO = 10.0, 20.0, 100.0, 1.10


def run(results: Results, quick: bool) -> None:
    legs = 1_000_000 if quick else 10_000_000
    for engine in ("sqlite", "postgresql"):
        print(f"  -- {engine}", flush=True)
        with databases(engine) as (plain_url, full_url):
            one_engine(results, engine, plain_url, full_url, legs, quick)


def one_engine(results, engine: str, plain_url: str, full_url: str, legs: int, quick) -> None:
    with tempfile.TemporaryDirectory(prefix="pbx-bench-history-") as tmp:
        plain = LiveCalls(_runtime(Path(tmp) / "plain", plain_url))
        full = LiveCalls(_runtime(Path(tmp) / "full", full_url))
        try:
            month, took = history_fill.fill(full.rt.engine, legs)
            history_fill.settle(plain.rt.engine)
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


def _ask(api, query: str, clock: ServerClock) -> tuple[float, int, float]:
    """(wall ms, rows, CPU ms) of one request, server side."""
    cpu = clock.now()
    started = time.perf_counter()
    code, body = api.dispatch("calls/active/list", "GET", query, b"")
    took = (time.perf_counter() - started) * 1000
    cpu = (clock.now() - cpu) * 1000
    answer = orjson.loads(body)
    assert code == 200 and answer["responses"][0]["code"] == "200", body[:300]
    data = answer["data"]
    return took, (data["count"] if isinstance(data, dict) else len(data)), cpu


def _live_changing(results, engine, plain: LiveCalls, full: LiveCalls, legs, quick) -> None:
    runs = 300 if quick else 1500
    clocks = {"plain": ServerClock(plain.rt), "full": ServerClock(full.rt)}
    for name, who, extra in (
        ("own", "cust", "names=1"),
        ("system", "admin", "customer=system;names=1"),
    ):
        query = f"auth_username={who};auth_password=pw;{extra}"
        times: dict[str, list[float]] = {"plain": [], "full": []}
        cpus: dict[str, list[float]] = {"plain": [], "full": []}
        for i in range(runs + 20):
            for label, calls in (("plain", plain), ("full", full)):
                if i == 20:
                    clocks[label].find_backends()
                calls.churn()
                took, rows, cpu = _ask(calls.rt.api, query, clocks[label])
                if i >= 20:  # after a warm-up
                    times[label].append(took)
                    cpus[label].append(cpu)
        base = "the same live list on a database alike but without the history rows"
        note = (
            f"{rows} legs, {extra}; {legs:,} history rows; a call ends and one starts before "
            f"every request; {runs} runs each, alternating; load average {load_average()}"
        )
        for kind, values in (("", times), ("cpu_", cpus)):
            ratio = median(values["full"]) / median(values["plain"])
            results.add(
                f"history.live_{name}_changing_{kind}p50_ms.{engine}",
                median(values["full"]),
                "ms",
                baseline=median(values["plain"]),
                baseline_name=base + (" (CPU)" if kind else ""),
                target=f"ratio <= {LIVE_RATIO:g}",
                met=ratio <= LIVE_RATIO,
                note=note,
            )


def _customers(results, engine: str, full: LiveCalls, month, quick: bool) -> None:
    rnd = random.Random(14)
    runs = 500 if quick else 3000
    moments = [rnd.uniform(month.first + 86400, month.end - 60) for _ in range(runs)]
    biggest = history_fill.biggest_customer()
    clock = ServerClock(full.rt)
    for name, pick in (("random", lambda: rnd.randrange(22, 1001)), ("biggest", lambda: biggest)):
        times, cpus, sizes = [], [], []
        for i, at in enumerate(moments):
            if i == 20:
                clock.find_backends()
            query = f"auth_username=admin;auth_password=pw;customer={pick()};names=1;at={at:.3f}"
            took, rows, cpu = _ask(full.rt.api, query, clock)
            times.append(took)
            cpus.append(cpu)
            sizes.append(rows)
        note = (
            f"{runs} random moments of the month; legs listed: median {median(sizes):g}, "
            f"max {max(sizes)}; load average {load_average()}"
        )
        for kind, values in (("", times[20:]), ("cpu_", cpus[20:])):
            for p, limit in ((50, CUSTOMER_P50), (99, CUSTOMER_P99)):
                value = percentile(values, p)
                results.add(
                    f"history.at_{name}_customer_{kind}p{p}_ms.{engine}",
                    value,
                    "ms",
                    target=f"<= {limit:g} ms",
                    met=check(value, "<=", limit),
                    note=note,
                )


def _system(results, engine: str, full: LiveCalls, month, quick: bool) -> None:
    clock = ServerClock(full.rt)
    for with_names in ("1", "0"):
        query = (
            f"auth_username=admin;auth_password=pw;customer=system;names={with_names};"
            f"at={month.surge_at}"
        )
        for _ in range(3):
            _ask(full.rt.api, query, clock)
        clock.find_backends()
        times, cpus, rows = [], [], 0
        for _ in range(10 if quick else 30):
            took, rows, cpu = _ask(full.rt.api, query, clock)
            times.append(took)
            cpus.append(cpu)
        note = (
            f"{rows} legs live at that moment (customer=system, names={with_names}); "
            f"{len(times)} runs; load average {load_average()}"
        )
        label = "" if with_names == "1" else "_no_names"
        for kind, values in (("", times), ("cpu_", cpus)):
            results.add(
                f"history.at_system_surge{label}_{kind}p50_ms.{engine}",
                median(values),
                "ms",
                target=f"<= {SYSTEM_MS:g} ms",
                met=check(median(values), "<=", SYSTEM_MS),
                note=note,
            )
