"""The fleet bench's floors and its reference, on the burst's exact events:

- `reference`: each machine's burst through the recorder's own LiveLegs in process, no loss
  possible (no websocket, no database): the rows every API must show, field by field, and the
  batches of row writes (the recorder's default `batch_size` of events each: the most a
  recorder takes into one write, so the floor writes no more rows than it) it makes meanwhile;
- `raw_pg`: those row writes (INSERT the new legs, UPDATE the changed ones, INSERT the ended
  ones' history, DELETE them), batched, one connection per machine, plain psycopg on copies of
  the two tables without triggers and without the change journal: PostgreSQL's own rate;
- `bare_readers`: per machine a bare reader (websocket-client + json.loads, nothing stored) of
  the same stand-in servers sending the same bytes.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import threading
import time
from typing import Any

import psycopg
import requests
import websocket

from bench import fleetcalls
from bench.fleetsite import AUTH, StandIns
from pbxcontrol.config import Config

BATCH = Config.batch_size  # the recorder's default batch
WORKERS = 2  # processes of the floors (2 cores)


def reference(machines: int, copies: int, keep: int) -> tuple[dict, dict[int, list]]:
    """({(machine, uniqueid): row}, {machine: [Changes rows per batch]})."""
    from pbxcontrol import provisioning
    from pbxcontrol.ari.events import parse_event
    from pbxcontrol.db import migrate
    from pbxcontrol.db.engine import make_engine, make_sessionmaker
    from pbxcontrol.recorder.live import LiveLegs
    from pbxcontrol.recorder.provisioned import ProvisionedCache

    rows: dict[tuple[int, str], dict] = {}
    batches: dict[int, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/ref.db")
        migrate.upgrade(engine)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            provisioning.apply(session, fleetcalls.provisioning())
        cache = ProvisionedCache(sessions)
        for machine in range(1, machines + 1):
            live = LiveLegs(machine, cache.get)
            setup, teardown = fleetcalls.burst(machine, copies, keep)
            stream = setup + teardown
            batches[machine] = []
            for start in range(0, len(stream), BATCH):
                for seq, text in enumerate(stream[start : start + BATCH], start + 1):
                    event = parse_event(text)
                    if event is not None:
                        live.apply(event, seq)
                changes = live.changes()
                batches[machine].append(
                    (changes.inserts, changes.updates, changes.ended, changes.gone)
                )
                changes.committed()
            rows.update({(machine, uid): leg.row() for uid, leg in live.legs.items()})
        engine.dispose()
    return rows, batches


def raw_pg(url: str, batches: dict[int, list], events: int) -> dict[str, float]:
    """The row writes of every machine at once; events per second of the burst's events."""
    from pbxcontrol.db import migrate
    from pbxcontrol.db.engine import make_engine

    engine = make_engine(url)
    migrate.upgrade(engine)  # the tables to copy the shape of
    engine.dispose()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("legs", "leg_history"):
            conn.execute(f"DROP TABLE IF EXISTS floor_{table}")
            conn.execute(f"CREATE TABLE floor_{table} (LIKE {table} INCLUDING ALL)")
    machines = sorted(batches)
    groups = [g for g in (machines[i::WORKERS] for i in range(WORKERS)) if g]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(groups) + 1)
    queue = context.Queue()
    procs = [
        context.Process(target=_write_group, args=(dsn, {m: batches[m] for m in g}, barrier, queue))
        for g in groups
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.time()
    ends = [queue.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    seconds = max(ends) - started
    return {"events_per_s": events / seconds, "seconds": seconds}


def _write_group(dsn: str, batches: dict[int, list], barrier, queue) -> None:
    conns = {m: psycopg.connect(dsn) for m in batches}
    threads = [
        threading.Thread(target=_write_machine, args=(conns[m], m, batches[m])) for m in batches
    ]
    barrier.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(time.time())
    for conn in conns.values():
        conn.close()


def _write_machine(conn: psycopg.Connection, machine: int, batches: list) -> None:
    for inserts, updates, ended, gone in batches:
        with conn.transaction(), conn.cursor() as cur:
            if inserts:
                cur.executemany(_insert("floor_legs", inserts[0]), inserts)
            if updates:
                columns = [c for c in updates[0] if c not in ("machine", "uniqueid")]
                sets = ", ".join(f"{c} = %({c})s" for c in columns)
                cur.executemany(
                    f"UPDATE floor_legs SET {sets} "
                    "WHERE machine = %(machine)s AND uniqueid = %(uniqueid)s",
                    updates,
                )
            if ended:
                cur.executemany(_insert("floor_leg_history", ended[0]), ended)
            if gone:
                cur.executemany(
                    "DELETE FROM floor_legs WHERE machine = %s AND uniqueid = %s",
                    [(machine, uid) for uid in gone],
                )


def _insert(table: str, row: dict[str, Any]) -> str:
    columns = ", ".join(row)
    values = ", ".join(f"%({c})s" for c in row)
    return f"INSERT INTO {table} ({columns}) VALUES ({values})"


def bare_readers(machines: int, copies: int, keep: int) -> dict[str, float]:
    """Every machine's backlog at once into bare readers, one per machine, in WORKERS
    processes; events per second from the first byte sent to the last message decoded."""
    stand_ins = StandIns(machines, copies, keep)
    try:
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        numbers = list(stand_ins.ports)
        procs = [
            context.Process(
                target=_read_group,
                args=(
                    {m: (stand_ins.url(m), sum(stand_ins.burst_events[m])) for m in group},
                    queue,
                ),
            )
            for group in (numbers[i::WORKERS] for i in range(WORKERS))
            if group
        ]
        for proc in procs:
            proc.start()
        with stand_ins.cond:
            stand_ins.cond.wait_for(lambda: len(stand_ins.listed) == machines, timeout=120)
        sent = stand_ins.tell("burst", "burst-done")
        stand_ins.tell("teardown", "burst-done")
        ends = [queue.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
    finally:
        stand_ins.stop()
    starts = [s for line in sent for s, _, _ in json.loads(line).values()]
    events = sum(map(sum, stand_ins.burst_events.values()))
    seconds = max(ends) - min(starts)
    return {"events_per_s": events / seconds, "seconds": seconds}


def _read_group(machines: dict[int, tuple[str, int]], queue) -> None:
    import base64

    token = base64.b64encode(":".join(AUTH).encode()).decode()
    done: list[float] = []

    def one(url: str, count: int) -> None:
        ws = websocket.WebSocket(skip_utf8_validation=True)
        ws.connect(
            url.replace("http", "ws", 1) + "/events?app=bare&subscribeAll=true",
            header=[f"Authorization: Basic {token}"],
            timeout=600,
        )
        requests.get(url + "/channels", auth=AUTH, timeout=30)
        for _ in range(count):
            json.loads(ws.recv())
        done.append(time.time())
        ws.close()

    threads = [threading.Thread(target=one, args=args) for args in machines.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(max(done))


def compare(api: dict, expected: dict, fields: set[str] | None = None) -> list[str]:
    """Differences between an API's rows and the reference's, on the fields both have: the
    first few, then a line of counts."""
    missing, ghosts = expected.keys() - api.keys(), api.keys() - expected.keys()
    problems = [f"missing {key}" for key in sorted(missing)[:5]]
    problems += [f"ghost {key}" for key in sorted(ghosts)[:5]]
    wrong = 0
    for key in api.keys() & expected.keys():
        row, want = api[key], expected[key]
        names = (fields or set(want)) & set(row)
        bad = [n for n in names if str(row[n]) != str(want[n])]
        if bad:
            wrong += 1
            if wrong <= 5:
                problems.append(f"{key}: " + ", ".join(f"{n}={row[n]!r}!={want[n]!r}" for n in bad))
    if wrong or missing or ghosts:
        problems.append(f"COUNTS {len(missing)} missing, {len(ghosts)} ghosts, {wrong} wrong")
    return problems


def bad_legs(problems: list[str]) -> int:
    """The legs `compare` found wrong, missing or ghost, from its line of counts."""
    counts = [p.split()[1:] for p in problems if p.startswith("COUNTS ")]
    return sum(int(c[0]) + int(c[2]) + int(c[4]) for c in counts)
