"""GET /health (SPEC §10): does the database answer, is every configured machine recorded.

No credentials and no tenant data: per machine id only its recording state, holder (host:pid),
connection, last event age and number of live legs. A load balancer or monitor polls it.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Late
from dataclasses import dataclass
from typing import Any

import bottle
import orjson
from sqlalchemy import Connection, Engine, func, literal, select
from sqlalchemy.exc import SQLAlchemyError

from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import LEGS_TABLE, Base
from pbxcontrol.db.outage import is_outage

MACHINES = Base.metadata.tables["machines"]
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class MachineHealth:
    machine: int
    recording: bool
    holder: str
    connected: bool
    renewed_age: float | None  # seconds since the holder last renewed its lease (heartbeat)
    last_event_age: float | None  # seconds since the last message from Asterisk
    live_legs: int
    row: Any  # the machine's row (None: never recorded), for the metrics

    def public(self) -> dict[str, Any]:
        return {
            "recording": self.recording,
            "holder": self.holder,
            "connected": self.connected,
            "last_event_age": self.last_event_age,
            "live_legs": self.live_legs,
            "renewed_age": self.renewed_age,
        }


def _renewal(conn: Connection) -> tuple[Any, float]:
    """(the column the holder renews, the clock it is written in). With the lease (migration
    0011) `renewed_at` is in the database's clock; before it, `heartbeat_at` in the holder's."""
    if "renewed_at" in MACHINES.c:
        now = conn.execute(select(db_now(conn.dialect.name))).scalar_one()
        return MACHINES.c.renewed_at, float(now)
    return MACHINES.c.heartbeat_at, time.time()


def machines(conn: Connection, ids: list[int], takeover: float) -> list[MachineHealth]:
    """One entry per machine in `ids` (the configured ones) and any other the database has. A
    machine is recorded when it has a holder that renewed its lease and heard from Asterisk
    (its websocket is up: a websocket whose pings go unanswered is closed, and the holder
    writes `connected` false at once) within 2 × `takeover` seconds. A quiet Asterisk, with
    no calls, stays recorded: the holder renews whether or not events come."""
    renewed, db_time = _renewal(conn)
    rows = {r.id: r for r in conn.execute(select(MACHINES, renewed.label("renewed")))}
    counted = select(LEGS_TABLE.c.machine, func.count()).group_by(LEGS_TABLE.c.machine)
    legs = {machine: n for machine, n in conn.execute(counted)}
    now = time.time()
    found = []
    for mid in sorted(set(ids) | set(rows)):
        row = rows.get(mid)
        renewed_age = db_time - row.renewed if row is not None and row.renewed else None
        fresh = renewed_age is not None and renewed_age <= 2 * takeover
        holder = row.holder if row is not None and fresh else ""
        connected = bool(holder and row is not None and row.connected)
        last = row.last_event_at if row is not None else 0.0
        found.append(
            MachineHealth(
                mid,
                recording=connected,
                holder=holder,
                connected=connected,
                renewed_age=_round(renewed_age),
                last_event_age=_round(now - last if last else None),
                live_legs=legs.get(mid, 0),
                row=row,
            )
        )
    return found


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(max(seconds, 0.0), 1)


def check(engine: Engine, ids: list[int], takeover: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when the database answers and every machine in `ids` is
    recorded, else 503."""
    try:
        with engine.connect() as conn:
            conn.execute(select(literal(1)))
            found = machines(conn, ids, takeover)
    except SQLAlchemyError as exc:
        state = "unreachable" if is_outage(exc) else "error"
        return 503, {"status": "fail", "database": state, "machines": {}}
    entries = {str(m.machine): m.public() for m in found}
    ok = all(m.recording for m in found if m.machine in ids)
    return (200 if ok else 503), {
        "status": "ok" if ok else "fail",
        "database": "ok",
        "machines": entries,
    }


class Deadline:
    """Runs `check` on a small pool of this process's own (made after any fork) so that a
    database that hangs answers 503 "timeout" after `seconds` instead of hanging /health: a
    monitor or load balancer must get an answer. At most two checks wait on a hung database;
    later ones queue behind them and time out too."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __call__(
        self, engine: Engine, ids: list[int], takeover: float
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")
                self._pid = os.getpid()
            future = self._pool.submit(check, engine, ids, takeover)
        try:
            return future.result(timeout=self.seconds)
        except Late:
            return 503, {"status": "fail", "database": "timeout", "machines": {}}


def route(app: bottle.Bottle, engine: Engine, ids: list[int], takeover: float) -> None:
    """GET /health on `app`."""
    answer = Deadline(max(2.0, takeover))

    @app.get("/health")
    def health() -> bytes:
        status, body = answer(engine, ids, takeover)
        bottle.response.status = status
        bottle.response.content_type = JSON
        bottle.response.set_header("Cache-Control", "no-store")
        return orjson.dumps(body)
