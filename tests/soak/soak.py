"""Soak with faults against the sandbox Asterisk (not part of `make test`; run by hand, and
alone on the sandbox: other calls would spoil its comparisons with Asterisk's channels):

    .venv/bin/python -m tests.soak.soak --minutes 30 --rate 20
    .venv/bin/python -m tests.soak.soak --engine postgresql   # a primary and standby (root)

sipp places `rate` calls/s (carrier -> DID 0201112222 -> alice, each talking `talk` s) for the
whole run, recorded by `pbxcontrol record` (through a TCP proxy to ARI) and listed by
`pbxcontrol api`, both on one database — a SQLite file, or with `--engine postgresql` a
PostgreSQL primary and its streaming standby of the soak's own (tests/pgpair.py) named by the
multi-host URL — while (SPEC §12's bad day, one at a time):
the ARI websocket is cut every `--cut-every` s; the machine goes dark (its recorder killed
with -9 and kept away `--dark` s: its legs must be flagged `recorded` = 0 within
2 x takeover_seconds + 1 s); a stream subscriber stops reading (it must be dropped, memory
bounded); Asterisk restarts; the database is out (SQLite: its write lock held by another
process for `--outage` s) or, on PostgreSQL, fails over (the primary frozen with SIGSTOP, the
standby promoted: the list must equal Asterisk's within 15 s); both processes start while the
database is not there (SQLite: its directory appears after `--down` s; PostgreSQL: its server
starts again after them: they must wait, not exit, and work within 10 s of it); the API
process is killed with -9. `--skip` leaves faults out (a short run). The API is queried
continuously as a wallboard would.

Every `--check-every` s a checkpoint compares the API's system view with GET /ari/channels
(read before and after it): 0 missing and 0 ghost legs, outside a fault; after each fault the
time until they agree again. Memory is sampled all along; at the end every call is over, the
list must be empty and the database intact (SQLite: `PRAGMA integrity_check`; PostgreSQL:
no journal id above its sequence). Writes tests/soak/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.sippctl import (
    ASTERISK_SIP,
    SIPP_DIR,
    TRUNK_IP,
    UAC_PORT,
    Ari,
    SippPool,
    sandbox,
    sandbox_running,
)
from tests.e2e.proxy import CuttableProxy
from tests.e2e.support import PbxServer
from tests.soak.database import PostgresPair, SqliteDatabase
from tests.soak.faults import Faults
from tests.soak.services import Check, compare, converge, launch, memory_mb, wait_up

#: Where each engine's report goes (the PostgreSQL run's apart: the two are different runs).
RESULTS = {
    "sqlite": Path(__file__).with_name("results.json"),
    "postgresql": Path(__file__).with_name("results-postgresql.json"),
}
TAKEOVER = 5.0  # [recorder] takeover_seconds of the soak's processes
#: Each fault once, at this share of the run (the websocket cuts come in between).
SCHEDULE = (
    (0.10, "dark machine"),
    (0.25, "stalled subscriber"),
    (0.40, "asterisk restart"),
    (0.55, "database outage"),  # SQLite; on PostgreSQL "database failover"
    (0.70, "database down at start"),
    (0.85, "kill -9 api"),
)


class Querier(threading.Thread):
    """Queries a customer view continuously, as a wallboard would."""

    def __init__(self, pbx: PbxServer):
        super().__init__(daemon=True)
        self.pbx, self.stop_flag = pbx, threading.Event()
        self.ok = self.unanswered = 0
        self.codes: dict[str, int] = {}
        self.latencies: list[float] = []

    def run(self) -> None:
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            try:
                body = self.pbx.call_api("acme", names="1")
            except Exception:  # connection refused while a process is down
                self.unanswered += 1
                time.sleep(0.2)
                continue
            code = body["responses"][0]["code"]
            if code == "200":
                self.ok += 1
                self.latencies.append((time.perf_counter() - started) * 1000)
            else:
                self.codes[code] = self.codes.get(code, 0) + 1
            time.sleep(0.05)


class Checkpoints(threading.Thread):
    """Every `every` s: the API against Asterisk, labelled with the fault under way (None:
    steady). A steady checkpoint that is not exact is read again for up to 2 s (a call that
    began or ended between the reads), and both results are kept."""

    def __init__(self, api: PbxServer, ari: Ari, every: float, t0: float):
        super().__init__(daemon=True)
        self.api, self.ari, self.every, self.t0 = api, ari, every, t0
        self.fault: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(self.every):
            fault = self.fault
            check = compare(self.api, self.ari)
            row: dict[str, Any] = {
                "at_s": round(time.monotonic() - self.t0),
                "fault": fault,
                "check": check.__dict__ if check else None,
            }
            if fault is None and (check is None or not check.exact):
                row["settled_s"] = converge(self.api, self.ari, 2.0)
            self.rows.append(row)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--talk", type=float, default=4.0, help="seconds per call")
    parser.add_argument("--cut-every", type=float, default=120.0)
    parser.add_argument("--check-every", type=float, default=10.0)
    parser.add_argument("--dark", type=float, default=2 * TAKEOVER + 15, help="seconds dark")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds of database outage")
    parser.add_argument("--down", type=float, default=20.0, help="seconds without a database")
    parser.add_argument("--out", type=Path, help="where the report goes (default: by engine)")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--skip", default="", help="faults left out, comma-separated")
    args = parser.parse_args()
    args.out = args.out or RESULTS[args.engine]
    return args


def start_calls(pool: SippPool, args: argparse.Namespace, total: float) -> None:
    calls = int(args.rate * total)
    pool.phone_answers("alice", ring_ms=200, calls=calls * 2, timeout_s=int(total + 300))
    talk, rate = str(int(args.talk * 1000)), str(args.rate)
    pool._start(
        "carrier-uac",
        TRUNK_IP,
        ["-sf", str(SIPP_DIR / "uac.xml"), "-p", str(UAC_PORT), "-mp", "6300"]
        + ["-s", "0201112222", "-key", "cnum", "0207946000", "-key", "cname", "Dentist"]
        + ["-d", talk, "-r", rate, "-l", str(args.rate * int(args.talk + 4))]
        + ["-cid_str", "soak-%u@%s", ASTERISK_SIP],
        calls=calls,
        timeout_s=int(total + 300),
    )


def run_faults(
    faults: Faults, args: argparse.Namespace, total: float, report: dict, watch: Checkpoints
) -> None:
    """The run: each scheduled fault once, websocket cuts in between, memory every 30 s."""
    pg = faults.db.engine == "postgresql"
    actions: dict[str, Callable[[], dict[str, Any]]] = {
        "dark machine": lambda: faults.dark_machine(args.dark),
        "stalled subscriber": faults.stalled_subscriber,
        "asterisk restart": faults.asterisk_restart,
        "database outage": lambda: faults.database_outage(args.outage),
        "database failover": faults.database_failover,
        "database down at start": lambda: faults.database_down_at_start(args.down),
        "kill -9 api": faults.kill_api,
        "websocket cut": faults.websocket_cut,
    }
    skipped = set(filter(None, args.skip.split(",")))
    pending = [
        (share, "database failover" if fault == "database outage" and pg else fault)
        for share, fault in SCHEDULE
        if fault not in skipped
    ]
    next_cut, next_mem = args.cut_every, 0.0
    while (elapsed := time.monotonic() - watch.t0) < total:
        if elapsed >= next_mem:
            report["memory_mb"].append(
                [round(elapsed), *memory_mb(faults.api), *memory_mb(faults.record)]
            )
            next_mem += 30
        fault = None
        if pending and elapsed >= pending[0][0] * total:
            fault = pending.pop(0)[1]
        elif elapsed >= next_cut:
            next_cut += args.cut_every
            fault = "websocket cut"
        if fault:
            watch.fault = fault
            try:
                measured = actions[fault]()
            finally:
                watch.fault = None
            report["faults"].append({"at_s": round(elapsed), "fault": fault, **measured})
            print(f"{elapsed:7.0f}s {fault}: {json.dumps(measured)}", flush=True)
        time.sleep(0.5)


def finish(
    record: PbxServer, api: PbxServer, ari: Ari, db: SqliteDatabase | PostgresPair, report: dict
) -> None:
    """Every call over: the list must be empty; a clean stop; the database intact."""
    for chan in ari.channels():
        ari.hangup(chan["id"])
    report["final"] = {
        "reconverged_s": converge(api, ari, 60),
        "ari_channels": len(ari.channels()),
    }
    report["sigterm_exit"] = {"api": api.stop(), "record": record.stop()}
    report["integrity_check"] = db.integrity()


def summary(report: dict, querier: Querier) -> dict[str, Any]:
    steady = [c for c in report["checks"] if c["fault"] is None]
    faults = report["faults"]

    def cut(fault: dict[str, Any]) -> bool:
        return fault["fault"] == "websocket cut"

    exact = [c for c in steady if c["check"] and Check(**c["check"]).exact]
    mem = [m[1] for m in report["memory_mb"] if m[1]]
    return {
        "checkpoints": len(report["checks"]),
        "steady_checkpoints": len(steady),
        "steady_exact_at_once": len(exact),
        "steady_settled_within_2s": sum(
            1 for c in steady if c in exact or c.get("settled_s") is not None
        ),
        "steady_max_missing": max((c["check"]["missing"] for c in steady if c["check"]), default=0),
        "steady_max_ghosts": max((c["check"]["ghosts"] for c in steady if c["check"]), default=0),
        "reconverged_s": {f["fault"]: f["reconverged_s"] for f in faults if not cut(f)},
        "websocket_cuts_reconverged_s": [f["reconverged_s"] for f in faults if cut(f)],
        "api_rss_first_last_max_mb": [mem[0], mem[-1], max(mem)] if mem else None,
        "api_ok": querier.ok,
        "api_other_codes": querier.codes,
        "api_unanswered": querier.unanswered,
        "api_p50_ms": round(statistics.median(querier.latencies), 2) if querier.latencies else None,
    }


def main() -> None:
    args = arguments()
    total = args.minutes * 60
    started_sandbox = False
    if not sandbox_running():
        done = sandbox("up")
        if done.returncode:
            raise SystemExit(f"sandbox did not start:\n{done.stdout}{done.stderr}")
        started_sandbox = True
    work = Path(tempfile.mkdtemp(prefix="pbx-soak-"))
    db = PostgresPair() if args.engine == "postgresql" else SqliteDatabase(work)
    ari, proxy = Ari(), CuttableProxy()
    app = f"pbxcontrol-soak-{int(time.time())}"
    extra = f"[recorder]\ntakeover_seconds = {TAKEOVER:g}\n"
    record = PbxServer(work / "record", proxy.url, app, db.url, command="record", extra=extra)
    api = PbxServer(work / "api", proxy.url, app, db.url, command="api", extra=extra)
    pool = SippPool(work / "sipp", tag="soak")
    report: dict[str, Any] = {"minutes": args.minutes, "rate": args.rate, "takeover_s": TAKEOVER}
    report.update(engine=db.engine, skipped=args.skip)
    report.update(faults=[], checks=[], memory_mb=[])
    querier = Querier(api)
    watch = Checkpoints(api, ari, args.check_every, time.monotonic())
    try:
        record.provision()
        for pbx in (record, api):
            up_s, status = wait_up(pbx, launch(pbx), 60)
            assert up_s is not None, f"{pbx.command} did not start ({status}):\n{pbx.tail()}"
        start_calls(pool, args, total)
        querier.start()
        watch.t0 = time.monotonic()
        watch.start()
        run_faults(Faults(record, api, ari, proxy, db), args, total, report, watch)
        watch.stop_flag.set()
        querier.stop_flag.set()
        pool.stop()  # no new calls; the rest are hung up
        finish(record, api, ari, db, report)
    finally:
        watch.stop_flag.set()
        querier.stop_flag.set()
        report["checks"] = watch.rows
        pool.stop()
        for chan in ari.channels():  # also when interrupted: leave Asterisk empty
            ari.hangup(chan["id"])
        for pbx in (api, record):
            if pbx.proc is not None:
                pbx.stop()
        proxy.close()
        db.close()
        if started_sandbox:
            sandbox("down")
    report["summary"] = summary(report, querier)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))
    print(
        f"final: {report['final']}, integrity: {report['integrity_check']}, "
        f"SIGTERM exit: {report['sigterm_exit']}; details in {args.out}"
    )


if __name__ == "__main__":
    main()
