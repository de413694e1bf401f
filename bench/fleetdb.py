"""The fleet's writes into one PostgreSQL, without Asterisk: N writer processes, one per machine,
each committing batches of leg rows and their change-journal entries through the recorder's own
write path (lease, fenced transaction, store) as fast as the database takes them, while this
process samples what the server's backends wait on (`pg_stat_activity`, `pg_locks`).

What it tells: whether the machines' writes serialise in the database (issue 21). It reports
journal entries committed per second (one per leg change: an ARI event's worth), transactions per
second, the slowest commit, how often a writer's lease stopped being trusted and how often its
reader would have closed the events websocket (by the rule of the code measured), and the top
wait events.

    .venv/bin/python bench/fleetdb.py --machines 1,10,50 --seconds 8

It needs the PostgreSQL of scripts/postgres-sandbox (or `--url`); it creates a database of its
own and drops it at the end. A part of `make bench` as `fleetdb`.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, make_url, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from pbxcontrol.db import migrate  # noqa: E402
from pbxcontrol.db.engine import make_engine, make_sessionmaker  # noqa: E402
from pbxcontrol.db.models import LEGS_TABLE  # noqa: E402

INSERTS, UPDATES, ENDS = 50, 100, 50  # leg changes per batch: 200, the recorder's batch size
LIVE = 500  # legs each machine keeps live


def sandbox_url() -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "postgres-sandbox"), "url"], capture_output=True, text=True
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit("no PostgreSQL: run scripts/postgres-sandbox up (or pass --url)")
    return out.stdout.strip()


def _template() -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col in LEGS_TABLE.columns:
        if col.name == "id":
            continue
        row[col.name] = 0 if str(col.type).upper() in ("INTEGER", "BIGINT") else ""
    return row


class Machine:
    """One stand-in machine's legs: every batch adds, changes and ends some."""

    def __init__(self, machine: int):
        self.machine = machine
        self.template = _template()
        self.live: dict[str, dict[str, Any]] = {}
        self.n = 0

    def _new(self) -> dict[str, Any]:
        self.n += 1
        uid = f"{self.machine}.{self.n}"
        row = dict(self.template, machine=self.machine, uniqueid=uid, callid=uid)
        row.update(scustomer=random.randint(1, 50), dcustomer=random.randint(1, 50))
        row.update(start=time.time(), status="Ring")
        return row

    def batch(self):
        from pbxcontrol.recorder.live import Changes

        inserts = [self._new() for _ in range(INSERTS)]
        keys = list(self.live)
        updates = []
        for uid in random.sample(keys, min(UPDATES, len(keys))):
            row = dict(self.live[uid], status="Up", answered=time.time())
            updates.append(row)
        ended, gone = [], []
        if len(keys) > LIVE:
            for uid in random.sample(keys, min(ENDS, len(keys))):
                if uid in {u["uniqueid"] for u in updates}:
                    continue
                ended.append(dict(self.live[uid], ended=time.time(), cause=16, cause_txt="x"))
                gone.append(uid)

        def committed() -> None:
            for row in inserts + updates:
                self.live[row["uniqueid"]] = row
            for uid in gone:
                self.live.pop(uid, None)

        return Changes(inserts, updates, ended, gone, committed)


def writer(url: str, machine: int, seconds: float, ready, go, out) -> None:
    """One machine's writer process: take the lease, then write batches until `seconds` pass."""
    from pbxcontrol.recorder import store
    from pbxcontrol.recorder.lease import Lease
    from pbxcontrol.recorder.status import Heartbeat
    from pbxcontrol.recorder.transactions import Transactions

    logging.basicConfig(level=logging.WARNING, format=f"machine {machine}: %(message)s")
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    stopping = threading.Event()
    lease = Lease(machine, f"bench:{os.getpid()}", 5.0, f"machine {machine}")
    tx = Transactions(sessions, lease, f"machine {machine}", stopping)
    tx.run(lambda s: lease.ensure_row(s, f"machine {machine}"), "row", fenced=False)
    while not tx.run(lease.try_acquire, "lease", fenced=False):
        time.sleep(0.2)
    renewer = _start_renewer(sessions, lease, stopping)
    status = Heartbeat(machine, f"machine {machine}", 5.0 / 3, lease.holder)
    legs = Machine(machine)
    ready.put(machine)
    alive = getattr(lease, "progress", lambda: None)  # (the renewer renews while it is called)
    while not go.wait(0.2):
        alive()
    lapses = [0, 0]
    watcher = threading.Thread(target=_watch, args=(lease, stopping, lapses), daemon=True)
    entries = txs = 0
    slowest = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end and not tx.lost:
        alive()  # as MachineRecorder.record does
        changes = legs.batch()
        started = time.monotonic()
        done = _flush(tx, store, changes, machine)
        slowest = max(slowest, time.monotonic() - started)
        if done:
            if not watcher.is_alive() and not txs:  # trusted from the first commit on
                watcher.start()
            changes.committed()
            txs += 1
            entries += len(changes.inserts) + len(changes.updates) + len(changes.gone)
        status.beat(tx, entries)
    stopping.set()
    if watcher.is_alive():
        watcher.join(5)
    if renewer is not None:
        renewer.join(5)
    out.put(
        {
            "machine": machine,
            "entries": entries,
            "transactions": txs,
            "slowest_commit_s": round(slowest, 3),
            "lease_untrusted": lapses[0],
            "websocket_closes": lapses[1],
            "lease_lost": bool(tx.lost),
        }
    )
    engine.dispose()


def _watch(lease, stopping: threading.Event, lapses: list[int]) -> None:
    """As the reader thread does (every 0.5 s at most, here 0.1 s): would it close the events
    websocket now (lapses[1])? And is the lease trusted (lapses[0]: doubts)?"""
    doubted = getattr(lease, "doubted_for", None)
    was_valid = was_kept = True
    while not stopping.wait(0.1):
        valid = lease.valid()
        # Before issue 21 the reader closed at the first doubt.
        kept = valid if doubted is None else not lease.revoked and doubted() < lease.takeover
        lapses[0] += was_valid and not valid
        lapses[1] += was_kept and not kept
        was_valid, was_kept = valid, kept


def _flush(tx, store, changes, machine: int) -> bool:
    """The recorder's flush (MachineRecorder.flush) without the LiveLegs around it."""
    prepare = getattr(store, "prepare", None)
    if prepare is not None:  # the write built before BEGIN
        batch = prepare(changes, machine)
        return bool(tx.run(lambda s: store.write_prepared(batch, s) or True, "writing legs"))
    return bool(tx.run(lambda s: store.write(changes, machine, s) or True, "writing legs"))


def _start_renewer(sessions, lease, stopping):
    try:
        from pbxcontrol.recorder.renewer import Renewer
    except ImportError:  # before issue 21: the writer's own commits renewed the lease
        return None
    renewer = Renewer(sessions, lease, stopping)
    thread = threading.Thread(target=renewer.run, daemon=True)
    thread.start()
    return thread


WAITS = text(
    "SELECT coalesce(wait_event_type || ':' || wait_event, state), count(*) "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND state <> 'idle' GROUP BY 1"
)
LOCKS = text(
    "SELECT l.locktype || coalesce(':' || c.relname, ''), count(*) FROM pg_locks l "
    "LEFT JOIN pg_class c ON c.oid = l.relation WHERE NOT l.granted GROUP BY 1"
)


def sample(engine, stop: threading.Event, waits: collections.Counter, locks: collections.Counter):
    """Every 50 ms: what the busy backends are doing, and which locks are waited for."""
    n = 0
    with engine.connect() as conn:
        while not stop.wait(0.05):
            for what, count in conn.execute(WAITS):
                waits[what] += count
            for what, count in conn.execute(LOCKS):
                locks[what] += count
            conn.commit()
            n += 1
    waits["_samples"] = n


def run_one(url: str, machines: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=writer, args=(url, m, seconds, ready, go, out))
        for m in range(1, machines + 1)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    engine = create_engine(url, poolclass=NullPool)
    waits: collections.Counter = collections.Counter()
    locks: collections.Counter = collections.Counter()
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(engine, stop, waits, locks))
    sampler.start()
    started = time.monotonic()
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    for p in procs:
        p.join(30)
    engine.dispose()
    samples = max(1, waits.pop("_samples", 1))
    entries = sum(r["entries"] for r in results)
    return {
        "machines": machines,
        "seconds": round(elapsed, 1),
        "events_per_s": round(entries / elapsed),
        "transactions_per_s": round(sum(r["transactions"] for r in results) / elapsed, 1),
        "slowest_commit_s": max(r["slowest_commit_s"] for r in results),
        "lease_untrusted": sum(r["lease_untrusted"] for r in results),
        "websocket_closes": sum(r["websocket_closes"] for r in results),
        "lease_lost": sum(r["lease_lost"] for r in results),
        "busy_backends_avg": round(sum(waits.values()) / samples, 1),
        "top_waits": [(w, round(c / samples, 2)) for w, c in waits.most_common(6)],
        "lock_waits": [(w, round(c / samples, 2)) for w, c in locks.most_common(4)],
    }


def fresh_database(url: str) -> tuple[str, Any]:
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"fleetdb_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    engine.dispose()
    return db_url, (admin, name)


def drop(admin, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(results, quick: bool) -> None:
    """The `fleetdb` part of `make bench`: 1, 10 and 50 writers (quick: 1 and 10, shorter)."""
    url = sandbox_url()
    seconds = 4.0 if quick else 10.0
    for machines in (1, 10) if quick else (1, 10, 50):
        db_url, (admin, name) = fresh_database(url)
        try:
            row = run_one(db_url, machines, seconds)
        finally:
            drop(admin, name)
        waits = ", ".join(f"{w} {c}" for w, c in row["top_waits"][:3])
        results.add(
            f"fleetdb.m{machines}.events_per_s",
            row["events_per_s"],
            "events/s",
            note=f"busy backends {row['busy_backends_avg']}: {waits}",
        )
        results.add(f"fleetdb.m{machines}.slowest_commit", row["slowest_commit_s"], "s")
        results.add(
            f"fleetdb.m{machines}.websocket_closes",
            row["websocket_closes"],
            "closes",
            target="<= 0",
            met=row["websocket_closes"] == 0,
            note=f"the lease in doubt {row['lease_untrusted']} times (late renewals)",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--url", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    url = args.url or sandbox_url()
    rows = []
    for machines in [int(m) for m in args.machines.split(",")]:
        db_url, (admin, name) = fresh_database(url)
        try:
            row = run_one(db_url, machines, args.seconds)
        finally:
            drop(admin, name)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
