"""Call-control intents (SPEC §11.2): the API writes what it wants done, the holder of the
machine's lease does it, and the API reads the outcome — API hosts hold no ARI credentials.

Both sides are here, as SQL on `call_intents` (one row per request and machine) and
`call_actions` (the request's audit row, written first with code 0 and completed with the
answer):

- the API (`Control`, reached by plugins as `PluginContext.control`): `carry_out` writes the
  audit row and one intent per machine in one transaction, wakes the holders (`Doorbell` in
  this process; PostgreSQL `NOTIFY` on channel `pbxcontrol_intents` for the others), waits up to
  `WAIT` seconds after the request arrived, and marks what no holder took `expired`
  (compare-and-set); `complete` writes the answer into the audit row.
- the holder (pbxcontrol/recorder/intents.py): `claim`, `finish` and `orphan`, each in a
  transaction its caller fences with the lease.

A scheduled intent (calls/make's `delay`, SPEC §11.4) is written `scheduled` with its `deadline`
the time it is due; the API answers at once. A holder claims it once due, like a pending one;
nobody claims it before, so a standby that takes the lease meanwhile runs it when due (it is not
"claimed but unfinished": `orphan` leaves it alone). One due more than `SCHEDULE_GRACE` ago
(no holder at its time) expires instead of running late.

Deadlines are the database's clock (`db_now`), like the lease: hosts need not agree on theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import Base

INTENTS = Base.metadata.tables["call_intents"]
ACTIONS = Base.metadata.tables["call_actions"]
MACHINES = Base.metadata.tables["machines"]

PENDING, CLAIMED, DONE, REFUSED = "pending", "claimed", "done", "refused"
EXPIRED, UNKNOWN, SCHEDULED = "expired", "unknown", "scheduled"
STATES = (PENDING, CLAIMED, DONE, REFUSED, EXPIRED, UNKNOWN, SCHEDULED)
#: Seconds a scheduled intent may still run after it was due (a takeover took that long).
SCHEDULE_GRACE = 60.0
#: Seconds from the request's arrival to its answer at most; the intent's deadline too.
WAIT = 2.0
#: How often the API looks at the outcome while it waits.
ANSWER_POLL = 0.01
CHANNEL = "pbxcontrol_intents"
NO_HOLDER = "machine {machine}: no recording process holds it; nothing was done"
NOT_TAKEN = "machine {machine}: no recording process took the request within 2 s"


@dataclass(frozen=True)
class Intent:
    """What one machine's holder is asked to do."""

    machine: int
    function: str  # the executor's name: "hangup", ...
    targets: tuple[str, ...]  # uniqueids
    params: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds: > 0 is a scheduled intent, run when due (not waited for)


@dataclass(frozen=True)
class Request:
    """The audit row's fields: who asked what, from where, when (Unix seconds)."""

    at: float
    username: str
    customer_id: int
    address: str
    action: str
    callid: str = ""
    uniqueid: str = ""
    machine: int = 0


@dataclass(frozen=True)
class Outcome:
    """An intent as the API last read it. `state` CLAIMED at the end of the wait: the holder
    took it and has not finished (Enswitch's asynchronous answer)."""

    machine: int
    state: str
    code: int
    message: str
    legs: list[list[Any]]
    created: dict[str, Any]


class Doorbell:
    """In-process wake-ups of the holders (under `serve`): one event per machine, which the
    machine's intent worker waits on between its polls."""

    def __init__(self) -> None:
        self._events: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, machine: int) -> threading.Event:
        with self._lock:
            return self._events.setdefault(machine, threading.Event())

    def ring(self, machine: int) -> None:
        with self._lock:
            found = self._events.get(machine)
        if found is not None:
            found.set()


class Control:
    """The API's side: carry intents out through the machines' lease holders."""

    def __init__(self, engine: Engine, bell: Doorbell | None = None, wait: float = WAIT):
        self.engine = engine
        self.bell = bell or Doorbell()
        self.wait = wait

    def carry_out(
        self, request: Request, intents: Sequence[Intent], arrived: float
    ) -> tuple[int, list[Outcome]]:
        """Write the audit row and the intents, wake the holders, wait for the outcomes until
        `wait` seconds after `arrived` (monotonic). Returns the audit row's id and the outcomes
        in the order of `intents`."""
        with self.engine.begin() as conn:
            action_id, ids = _write(conn, request, intents, self.wait)
        for intent in intents:
            self.bell.ring(intent.machine)
        # One connection for the whole wait, each look one statement in autocommit (no
        # checkout ping, BEGIN or ROLLBACK per look: a fresh pooled connection each time cost
        # three round trips more on PostgreSQL, at every 10 ms).
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            outcomes = _read(conn, ids)
            while any(o.state in (PENDING, CLAIMED) for o in outcomes):
                left = arrived + self.wait - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(ANSWER_POLL, left))
                outcomes = _read(conn, ids)
        if any(o.state == PENDING for o in outcomes):
            with self.engine.begin() as conn:
                _expire(conn, ids)
            outcomes = self._read(ids)
        return action_id, outcomes

    def complete(self, action_id: int, code: int, message: str, legs: list[list[Any]]) -> None:
        """The answer given, into the request's audit row."""
        with self.engine.begin() as conn:
            unsynced(conn)
            conn.execute(
                update(ACTIONS)
                .where(ACTIONS.c.id == action_id)
                .values(code=code, message=message, legs=orjson.dumps(legs).decode())
            )

    def _read(self, ids: list[int]) -> list[Outcome]:
        with self.engine.connect() as conn:
            return _read(conn, ids)


def _read(conn: Connection, ids: list[int]) -> list[Outcome]:
    rows = {row.id: row for row in conn.execute(select(INTENTS).where(INTENTS.c.id.in_(ids)))}
    return [_outcome(rows[i]) for i in ids]


def _write(
    conn: Connection, request: Request, intents: Sequence[Intent], wait: float
) -> tuple[int, list[int]]:
    """The audit row (code 0: not answered yet) and one intent per machine; an intent for a
    machine nobody holds is expired at once (nobody could take it)."""
    dialect = conn.dialect.name
    legs = [[i.machine, uid, "pending"] for i in intents for uid in i.targets]
    values = asdict(request) | {"code": 0, "message": "pending", "legs": _json(legs)}
    action_id = _inserted(conn, insert(ACTIONS).values(**values))
    machines = sorted({i.machine for i in intents})
    held = set(
        conn.execute(
            select(MACHINES.c.id).where(MACHINES.c.id.in_(machines), MACHINES.c.holder != "")
        ).scalars()
    )
    ids = []
    for intent in intents:
        state = PENDING if intent.machine in held else EXPIRED
        if state == PENDING and intent.delay > 0:
            state = SCHEDULED
        row = {
            "action_id": action_id,
            "at": request.at,
            "machine": intent.machine,
            "function": intent.function,
            "targets": _json(list(intent.targets)),
            "params": _json(intent.params),
            "state": state,
            "deadline": db_now(dialect) + (intent.delay if state == SCHEDULED else wait),
            "code": 503 if state == EXPIRED else 0,
            "message": NO_HOLDER.format(machine=intent.machine) if state == EXPIRED else "",
        }
        ids.append(_inserted(conn, insert(INTENTS).values(**row)))
    if dialect == "postgresql":  # delivered at commit, to the holders on other hosts
        for machine in sorted(held):
            conn.execute(text("SELECT pg_notify(:c, :m)"), {"c": CHANNEL, "m": str(machine)})
    return action_id, ids


def _expire(conn: Connection, ids: list[int]) -> None:
    """What no holder took by now will never run (compare-and-set against a late claim)."""
    for row in conn.execute(
        select(INTENTS.c.id, INTENTS.c.machine).where(
            INTENTS.c.id.in_(ids), INTENTS.c.state == PENDING
        )
    ).all():
        conn.execute(
            update(INTENTS)
            .where(INTENTS.c.id == row.id, INTENTS.c.state == PENDING)
            .values(state=EXPIRED, code=503, message=NOT_TAKEN.format(machine=row.machine))
        )


# -- the holder's side, each in a transaction its caller fences with the lease -------------


@dataclass(frozen=True)
class Claimed:
    """An intent this holder now carries out."""

    id: int
    machine: int
    function: str
    targets: tuple[str, ...]
    params: dict[str, str]


def pending(session: Session, machine: int) -> bool:
    """Whether the machine has an intent waiting or due (a read, before any fenced write)."""
    now = db_now(session.get_bind().dialect.name)
    found = select(INTENTS.c.id).where(INTENTS.c.machine == machine, _ready(now))
    return session.execute(found.limit(1)).first() is not None


def due_in(session: Session, machine: int) -> float | None:
    """Seconds until the machine's next scheduled intent is due (None: none scheduled)."""
    now = db_now(session.get_bind().dialect.name)
    first = select(func.min(INTENTS.c.deadline) - now).where(
        INTENTS.c.machine == machine, INTENTS.c.state == SCHEDULED
    )
    found = session.execute(first).scalar()
    return None if found is None else max(0.0, float(found))


def _ready(now: Any) -> Any:
    """Pending, or scheduled and due."""
    c = INTENTS.c
    return or_(c.state == PENDING, and_(c.state == SCHEDULED, c.deadline <= now))


def fence(session: Session, machine: int, epoch: int) -> bool:
    """The holder's claim first checks its epoch in the claim's own transaction, without
    renewing the lease: PostgreSQL, a key-share lock on the machine's row (a takeover, which
    changes the epoch, a key column, waits for this transaction); SQLite, a write that changes
    nothing (it takes the one write lock, so no takeover commits before this transaction
    ends). False when the lease is another epoch's."""
    where = (MACHINES.c.id == machine, MACHINES.c.epoch == epoch)
    if session.get_bind().dialect.name == "postgresql":
        query = select(MACHINES.c.id).where(*where).with_for_update(read=True, key_share=True)
        return session.execute(query).first() is not None
    done = session.execute(update(MACHINES).where(*where).values(epoch=MACHINES.c.epoch))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def claim(session: Session, machine: int, epoch: int, limit: int = 1) -> list[Claimed]:
    """Take up to `limit` of the machine's pending (or scheduled and due) intents, oldest first
    (compare-and-set: exactly one process gets each); those past their deadline (a scheduled
    one: past its grace) become `expired` instead — an action carried out late is worse than
    none."""
    now = db_now(session.get_bind().dialect.name)
    ready = (
        select(INTENTS.c.id, INTENTS.c.state)
        .where(INTENTS.c.machine == machine, _ready(now))
        .order_by(INTENTS.c.id)
    )
    taken: list[int] = []
    for intent_id, state in session.execute(ready).all():
        if len(taken) >= limit:
            break
        grace = SCHEDULE_GRACE if state == SCHEDULED else 0.0
        late = session.execute(
            update(INTENTS)
            .where(
                INTENTS.c.id == intent_id,
                INTENTS.c.state == state,
                INTENTS.c.deadline + grace < now,
            )
            .values(state=EXPIRED, code=503, epoch=epoch, message="claimed after its deadline")
        )
        if late.rowcount == 1:  # type: ignore[attr-defined]
            continue
        done = session.execute(
            update(INTENTS)
            .where(INTENTS.c.id == intent_id, INTENTS.c.state == state)
            .values(state=CLAIMED, epoch=epoch)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            taken.append(intent_id)
    if not taken:
        return []
    rows = session.execute(select(INTENTS).where(INTENTS.c.id.in_(taken))).all()
    return [
        Claimed(
            row.id,
            row.machine,
            row.function,
            tuple(orjson.loads(row.targets)),
            orjson.loads(row.params),
        )
        for row in rows
    ]


def finish(
    session: Session,
    intent_id: int,
    epoch: int,
    outcome: tuple[str, int, str, list[list[Any]], dict[str, Any]],
) -> bool:
    """The outcome (state, code, message, legs, created) into the intent this epoch claimed.
    Not fenced: the action happened, and who did it knows best; a row a new holder marked
    `unknown` meanwhile gets the truth."""
    state, code, message, legs, created = outcome
    unsynced(session.connection())
    done = session.execute(
        update(INTENTS)
        .where(
            INTENTS.c.id == intent_id,
            INTENTS.c.epoch == epoch,
            INTENTS.c.state.in_((CLAIMED, UNKNOWN)),
        )
        .values(state=state, code=code, message=message, legs=_json(legs), created=_json(created))
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def orphan(session: Session, machine: int, epoch: int) -> int:
    """A new holder's first act: what an earlier epoch claimed and did not finish may or may
    not have happened, and is never run again (at most once)."""
    done = session.execute(
        update(INTENTS)
        .where(INTENTS.c.machine == machine, INTENTS.c.state == CLAIMED, INTENTS.c.epoch < epoch)
        .values(state=UNKNOWN, code=503, message="the recording process changed meanwhile")
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def unsynced(conn: Connection) -> None:
    """PostgreSQL: this transaction's commit does not wait for its WAL to reach the disk. For
    the writes that only report what already happened (an outcome, the audit row's answer):
    a crash within the WAL writer's delay loses them — the row then says `claimed` (answered
    as asynchronous, never run again) or code 0 — and the answer does not wait for an fsync
    on a busy disk (the intent and its claim, which decide what runs, still do)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL synchronous_commit = off"))


def _outcome(row: Any) -> Outcome:
    return Outcome(
        row.machine,
        row.state,
        row.code,
        row.message,
        orjson.loads(row.legs),
        orjson.loads(row.created),
    )


def _inserted(conn: Connection, statement: Any) -> int:
    key = conn.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
