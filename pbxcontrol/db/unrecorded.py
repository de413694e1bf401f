"""Machines nobody records (SPEC §12): their live legs flagged `recorded = 0` once the lease has
gone 2 x `takeover_seconds` without a renewal (the database's clock), ended after
`forget_seconds`, recorded again once a holder has reconciled.

The verdict is written, not computed at read time, so the list's SQL, the in-memory views and
the streams all see it the same way: a machine's `recorded` row says what its legs were last
set to, and each leg whose `recorded` column changes gets a change-journal entry (an upsert,
its scope keys unchanged) in the same transaction. The views re-read those legs, the streams
send an upsert for each, the data version moves (the legs' trigger): no reader needs a clock.

Who writes:
- `Watch.check`, in the stream hub of every HTTP-serving process (`serve`, `api`): flags and
  forgets. Several processes may look at once: every write is conditional on the lease row
  it changes (checked again by the UPDATE itself, which takes the row's lock, as a holder's
  fence does), so one of them writes and the others find nothing left to do.
- `vouch`, by the machine's holder in its fenced transactions once it has reconciled with
  Asterisk (pbxcontrol.recorder): its legs are recorded again.
- `forget` at once: `pbxcontrol forget-machine N` (pbxcontrol.ops.forget).
A forget moves the lease's epoch on, so a holder that wakes up after it (a hung process)
writes nothing before it has taken the lease again and reloaded the machine's legs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    delete,
    exists,
    false,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)

from pbxcontrol.db import journal
from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import LEG_HISTORY_TABLE, LEGS_TABLE, Base

log = logging.getLogger("pbxcontrol.recorder")
MACHINES = Base.metadata.tables["machines"]
LEGS, HISTORY = LEGS_TABLE, LEG_HISTORY_TABLE
#: The `cause_txt` of the legs a forget ended (a leg Asterisk still has comes back live).
FORGOTTEN = "forgotten: its machine was not recorded"
#: The longest a watch waits between two looks (a holder that stops renewing is noticed at
#: the moment its lease turns 2 x takeover_seconds old, computed from the last look).
LOOK_EVERY = 1.0


@dataclass(frozen=True)
class Lease:
    """A machine's lease as a watch reads it."""

    machine: int
    holder: str
    recorded: bool  # what its legs were last set to
    renewed_at: float  # the database's clock at the last renewal (or release)
    age: float  # seconds since then, by the database's clock
    has_legs: bool


def leases(conn: Connection) -> list[Lease]:
    """Every machine's lease, aged by the database's clock (one statement)."""
    now = db_now(conn.dialect.name)
    has_legs = exists().where(LEGS.c.machine == MACHINES.c.id)
    rows = conn.execute(
        select(
            MACHINES.c.id,
            MACHINES.c.holder,
            MACHINES.c.recorded,
            MACHINES.c.renewed_at,
            (now - MACHINES.c.renewed_at).label("age"),
            has_legs.label("has_legs"),
        ).order_by(MACHINES.c.id)
    )
    return [
        Lease(r.id, r.holder, bool(r.recorded), r.renewed_at, r.age, bool(r.has_legs)) for r in rows
    ]


def unrecorded(conn: Connection) -> list[tuple[int, float]]:
    """(machine, since: the database's clock at its last renewal) of the machines whose legs
    are flagged not recorded, by id."""
    rows = conn.execute(
        select(MACHINES.c.id, MACHINES.c.renewed_at)
        .where(MACHINES.c.recorded == false())
        .order_by(MACHINES.c.id)
    )
    return [(machine, float(since)) for machine, since in rows]


def flag(conn: Connection, machine: int, silent_for: float) -> int | None:
    """Set the live legs of `machine` to recorded = 0 if its lease has not been renewed for
    `silent_for` seconds and they are not flagged yet; how many legs, None when there was
    nothing to do (a renewal committed meanwhile, or another process flagged it)."""
    now = db_now(conn.dialect.name)
    done = conn.execute(
        update(MACHINES)
        .where(
            MACHINES.c.id == machine,
            MACHINES.c.recorded == true(),
            MACHINES.c.renewed_at < now - silent_for,
        )
        .values(recorded=False)
    )
    if cast(CursorResult[Any], done).rowcount != 1:
        return None
    return _set_legs(conn, machine, 0)


def vouch(conn: Connection, machine: int) -> int:
    """The machine's holder has reconciled with Asterisk (its fenced transaction): its live
    legs are recorded again. How many legs changed (0 when none was flagged: the usual case,
    one UPDATE of the machine's row that matches nothing)."""
    done = conn.execute(
        update(MACHINES)
        .where(MACHINES.c.id == machine, MACHINES.c.recorded == false())
        .values(recorded=True)
    )
    if cast(CursorResult[Any], done).rowcount != 1:
        return 0
    return _set_legs(conn, machine, 1)


def _set_legs(conn: Connection, machine: int, value: int) -> int:
    """`recorded = value` on the machine's live legs, a journal entry for each one changed."""
    rows = conn.execute(
        update(LEGS)
        .where(LEGS.c.machine == machine, LEGS.c.recorded != value)
        .values(recorded=value)
        .returning(LEGS.c.uniqueid, LEGS.c.scustomer, LEGS.c.dcustomer)
    ).all()
    keys = {uid: (s, d) for uid, s, d in rows}
    written = [{"uniqueid": uid, "scustomer": s, "dcustomer": d} for uid, s, d in rows]
    journal.record_legs(conn, machine, written, [], keys)
    return len(rows)


def forget(
    conn: Connection, machine: int, silent_for: float, *, released: bool = False
) -> int | None:
    """End the live legs of `machine` if its lease has not been renewed for `silent_for`
    seconds (with `released`, also when no process holds it at all): moved to the history,
    ended at the last renewal, with journal entries removing them; the lease's epoch moves on.
    How many legs, None when the lease was renewed meanwhile."""
    now = db_now(conn.dialect.name)
    free = MACHINES.c.renewed_at < now - silent_for
    if released:
        free = or_(free, MACHINES.c.holder == "")
    row = conn.execute(
        update(MACHINES)
        .where(MACHINES.c.id == machine, free)
        .values(epoch=MACHINES.c.epoch + 1, holder="", connected=False, recorded=False)
        .returning(MACHINES.c.renewed_at)
    ).first()
    if row is None:
        return None
    ended = row.renewed_at or conn.execute(select(now)).scalar_one()
    columns = [c.name for c in LEGS.c if c.name != "id" and c.name in HISTORY.c]
    conn.execute(
        insert(HISTORY).from_select(
            [*columns, "ended", "cause", "cause_txt"],
            select(
                *(LEGS.c[name] for name in columns),
                literal(float(ended)),
                literal(0),
                literal(FORGOTTEN),
            ).where(LEGS.c.machine == machine),
        )
    )
    gone = conn.execute(
        delete(LEGS)
        .where(LEGS.c.machine == machine)
        .returning(LEGS.c.uniqueid, LEGS.c.scustomer, LEGS.c.dcustomer)
    ).all()
    journal.record_legs(
        conn, machine, [], [uid for uid, _, _ in gone], {u: (s, d) for u, s, d in gone}
    )
    return len(gone)


def back_from_forgotten(conn: Connection, machine: int) -> int:
    """A holder reconciled: the legs a forget had ended that Asterisk still has are live
    again, so their history rows (a guess at their end) go. How many."""
    live = select(LEGS.c.uniqueid).where(LEGS.c.machine == machine)
    done = conn.execute(
        delete(HISTORY).where(
            HISTORY.c.machine == machine,
            HISTORY.c.uniqueid.in_(live),
            HISTORY.c.cause_txt == FORGOTTEN,
        )
    )
    return int(cast(CursorResult[Any], done).rowcount or 0)


class Watch:
    """Looks at every machine's lease and writes what it calls for: flag the legs of a lease
    silent for 2 x `takeover` seconds, end them after `forget_seconds` (0: never). Run by the
    stream hub's thread (any number of processes may watch one database)."""

    def __init__(self, takeover: float, forget_seconds: float) -> None:
        self.silent_for = 2 * takeover
        self.forget_seconds = forget_seconds

    def check(self, engine: Engine) -> tuple[float, bool]:
        """One look and its writes: (seconds until the next look is due, whether it wrote)."""
        with engine.connect() as conn:
            found = leases(conn)
        wrote = False
        for lease in found:
            if lease.recorded and lease.age > self.silent_for:
                wrote |= self._flag(engine, lease)
            if self.forget_seconds and lease.has_legs and lease.age > self.forget_seconds:
                wrote |= self._forget(engine, lease)
        return self._next_look(found), wrote

    def _next_look(self, found: Iterable[Lease]) -> float:
        """When the first recorded lease turns `silent_for` old if nobody renews it."""
        due = [self.silent_for - lease.age for lease in found if lease.recorded]
        return max(0.01, min([LOOK_EVERY, *(d + 0.01 for d in due if d > 0)]))

    def _flag(self, engine: Engine, lease: Lease) -> bool:
        with engine.begin() as conn:
            flagged = flag(conn, lease.machine, self.silent_for)
        if flagged is None:
            return False
        log.warning(
            "machine %d is not recorded: its lease has not been renewed for %.1f s (last "
            "holder %s); its %d live legs are flagged recorded = 0",
            *(lease.machine, lease.age, lease.holder or "none", flagged),
        )
        return True

    def _forget(self, engine: Engine, lease: Lease) -> bool:
        with engine.begin() as conn:
            ended = forget(conn, lease.machine, self.forget_seconds)
        if ended is None:
            return False
        log.warning(
            "machine %d: not recorded for %.0f s (forget_seconds): ended its %d live legs at "
            "its last renewal, %s",
            *(lease.machine, lease.age, ended, _utc(lease.renewed_at)),
        )
        return True


def _utc(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix)) if unix else "never"
