"""GET /health (SPEC §10): does the database answer, is every configured machine recorded.

For the clients of `[http] ops_allow` only (SPEC §13). No credentials and no tenant data: per
machine id only its recording state, holder (host:pid), connection, last event age and number
of live legs; and `problems`, a line naming each machine that fails it (not recorded since
when, not connected). Every age is on the database's clock. A load balancer or monitor polls
it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Late
from dataclasses import dataclass
from typing import Any

import bottle
import orjson
from sqlalchemy import Connection, Engine, func, literal, select
from sqlalchemy.exc import SQLAlchemyError

from pbxcontrol.auth.proxy import Network, within
from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import LEGS_TABLE, Base
from pbxcontrol.db.outage import is_outage
from pbxcontrol.http import envelope
from pbxcontrol.http.envelope import ApiError

MACHINES = Base.metadata.tables["machines"]
JSON = "application/json; charset=utf-8"
access_log = logging.getLogger("pbxcontrol.access")


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
    recorded: bool = True  # its lease was renewed within 2 x takeover_seconds (SPEC §12)
    since: float | None = None  # the database's clock at its last renewal, when not recorded

    def public(self) -> dict[str, Any]:
        return {
            "recording": self.recording,
            "holder": self.holder,
            "connected": self.connected,
            "last_event_age": self.last_event_age,
            "live_legs": self.live_legs,
            "renewed_age": self.renewed_age,
            "recorded": self.recorded,
            "unrecorded_since": self.since,
        }

    def problem(self) -> str | None:
        """Why this machine fails /health, in a line naming it (None: it does not)."""
        if not self.recorded and self.since:
            return (
                f"machine {self.machine} is not recorded since {_utc(self.since)}: no recorder "
                f"renewed its lease for {self.renewed_age:g} s"
            )
        if not self.recorded:
            return f"machine {self.machine} is not recorded: no recorder ever held it"
        if not self.holder:
            return f"machine {self.machine}: its recorder stopped; none has taken it yet"
        if not self.connected:
            return f"machine {self.machine}: its recorder {self.holder} is not connected to ARI"
        return None


def _renewal(conn: Connection) -> tuple[Any, float]:
    """(the column the holder renews, the database's clock now). With the lease (migration
    0011) `renewed_at`; before it, `heartbeat_at`. Every age here is on the database's
    clock: hosts need not agree on theirs."""
    now = float(conn.execute(select(db_now(conn.dialect.name))).scalar_one())
    if "renewed_at" in MACHINES.c:
        return MACHINES.c.renewed_at, now
    return MACHINES.c.heartbeat_at, now


def machines(conn: Connection, ids: list[int], takeover: float) -> list[MachineHealth]:
    """One entry per machine in `ids` (the configured ones) and any other the database has. A
    machine is recorded when its lease was renewed within 2 × `takeover` seconds (SPEC §12),
    and recording when, besides, its holder hears from Asterisk (its websocket is up: a
    websocket whose pings go unanswered is closed, and the holder writes `connected` false at
    once). A quiet Asterisk, with no calls, stays recorded: the holder renews whether or not
    events come."""
    renewed, now = _renewal(conn)
    rows = {r.id: r for r in conn.execute(select(MACHINES, renewed.label("renewed")))}
    counted = select(LEGS_TABLE.c.machine, func.count()).group_by(LEGS_TABLE.c.machine)
    legs = {machine: n for machine, n in conn.execute(counted)}
    found = []
    for mid in sorted(set(ids) | set(rows)):
        row = rows.get(mid)
        renewed_age = now - row.renewed if row is not None and row.renewed else None
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
                recorded=fresh,
                since=None if fresh or row is None else (row.renewed or None),
            )
        )
    return found


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(max(seconds, 0.0), 1)


def _utc(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def check(engine: Engine, ids: list[int], takeover: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when the database answers and every machine in `ids` is
    recorded, else 503 with a line naming each problem (`problems`)."""
    try:
        with engine.connect() as conn:
            conn.execute(select(literal(1)))
            found = machines(conn, ids, takeover)
    except SQLAlchemyError as exc:
        state = "unreachable" if is_outage(exc) else "error"
        problems = ["the database does not answer"]
        return 503, {"status": "fail", "database": state, "machines": {}, "problems": problems}
    entries = {str(m.machine): m.public() for m in found}
    problems = [p for m in found if m.machine in ids and (p := m.problem()) is not None]
    return (503 if problems else 200), {
        "status": "fail" if problems else "ok",
        "database": "ok",
        "machines": entries,
        "problems": problems,
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
            problems = [f"the database did not answer within {self.seconds:g} s"]
            return 503, {
                "status": "fail",
                "database": "timeout",
                "machines": {},
                "problems": problems,
            }


def ops_only(allow: tuple[Network, ...]) -> Callable[[], None]:
    """A check for the operations endpoints (SPEC §13): a client outside `allow` (`[http]
    ops_allow`; the address resolved through trusted proxies) gets HTTP 403 with the envelope:
    /health and /metrics name hosts, pids and traffic."""

    def check() -> None:
        address = bottle.request.environ.get("REMOTE_ADDR", "")
        if not within(address, allow):
            access_log.info("%s %s %s 403", address, bottle.request.method, bottle.request.path)
            raise bottle.HTTPResponse(
                envelope.error(ApiError(403)),
                403,
                {"Content-Type": JSON, "Cache-Control": "no-store"},
            )

    return check


def route(
    app: bottle.Bottle, engine: Engine, ids: list[int], takeover: float, allow: tuple[Network, ...]
) -> None:
    """GET /health on `app`, for clients in `allow`."""
    answer = Deadline(max(2.0, takeover))
    allowed = ops_only(allow)

    @app.get("/health")
    def health() -> bytes:
        allowed()
        status, body = answer(engine, ids, takeover)
        bottle.response.status = status
        bottle.response.content_type = JSON
        bottle.response.set_header("Cache-Control", "no-store")
        return orjson.dumps(body)
