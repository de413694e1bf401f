"""One machine's live legs to and from SQL: load them at start, write each batch's changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, and_, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from pbxcontrol.db import journal, legwrites, unrecorded
from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import LEG_HISTORY_TABLE, LEGS_TABLE, Base, Machine
from pbxcontrol.recorder.lease import FENCE_POSTGRESQL
from pbxcontrol.recorder.leg import LiveLeg
from pbxcontrol.recorder.live import Changes, LiveLegs

LEGS, HISTORY = LEGS_TABLE, LEG_HISTORY_TABLE
MACHINES = Base.metadata.tables["machines"]
AUDIT = Base.metadata.tables["call_actions"]
INTENTS = Base.metadata.tables["call_intents"]


def load(live: LiveLegs, session: Session) -> int:
    """Take over the machine's legs from the database (a restart keeps what was derived).
    Returns how many."""
    rows = session.execute(select(LEGS).where(LEGS.c.machine == live.machine))
    legs = [LiveLeg.from_row(row) for row in rows]
    machine = session.get(Machine, live.machine)
    live.take_over(legs, machine.startup_time if machine and machine.startup_time else None)
    return len(legs)


# Built once: the writer runs them in every transaction, and building a statement (and its
# cache key) each time cost about as much as running it.
INSERT_LEGS = insert(LEGS)
UPDATE_LEGS = update(LEGS).where(
    and_(LEGS.c.machine == bindparam("b_machine"), LEGS.c.uniqueid == bindparam("b_uniqueid"))
)
INSERT_HISTORY = insert(HISTORY)
DELETE_LEGS = delete(LEGS).where(
    and_(LEGS.c.machine == bindparam("b_machine"), LEGS.c.uniqueid == bindparam("b_uniqueid"))
)


@dataclass(frozen=True)
class Batch:
    """One transaction's writes, their parameters built before it begins (a transaction that
    waits for Python holds its locks for nothing, and PostgreSQL ends one idle too long)."""

    machine: int
    changes: Changes
    updates: list[dict[str, Any]]
    gone: list[dict[str, Any]]
    statements: list[tuple[Any, dict[str, Any]]] | None = None  # PostgreSQL's (legwrites.py)


def prepare(changes: Changes, machine: int, postgresql: bool = False) -> Batch:
    """The parameters of `write_prepared`, built outside any transaction."""
    if postgresql:
        return Batch(machine, changes, [], [], _statements(changes, machine))
    updates = [
        {**r, "b_machine": r["machine"], "b_uniqueid": r["uniqueid"]} for r in changes.updates
    ]
    gone = [{"b_machine": machine, "b_uniqueid": uid} for uid in changes.gone]
    return Batch(machine, changes, updates, gone)


def _statements(changes: Changes, machine: int) -> list[tuple[Any, dict[str, Any]]]:
    """PostgreSQL: the journal's entries first (they read the keys before), then each kind of
    write one statement, its rows one JSON document."""
    statements: list[tuple[Any, dict[str, Any]]] = []
    journalled = changes.inserts + changes.updates
    if journalled or changes.gone:
        statements.append((None, journal.legs_entries(machine, journalled, changes.gone)))
    if changes.inserts:
        columns, params = legwrites.rows(changes.inserts)
        statements.append((legwrites.insert("legs", columns), params))
    if changes.updates:
        columns, params = legwrites.rows(changes.updates)
        statements.append((legwrites.update(columns), params))
    if changes.ended:
        columns, params = legwrites.rows(changes.ended)
        statements.append((legwrites.insert("leg_history", columns), params))
    if changes.gone:
        statements.append((legwrites.DELETE, {"machine": machine, "uids": changes.gone}))
    return statements


def write_prepared(batch: Batch, conn: Connection, fence: dict[str, Any] | None = None) -> bool:
    """Insert new legs, update changed ones, move ended ones to the history, in `conn`'s
    transaction; and the change journal's entries for them, in the same transaction
    (pbxcontrol.db.journal: their scope keys before, and after). On PostgreSQL the batch's
    prepared statements, the entries first, reading the keys before in the same call (the data
    version's trigger then leaves the legs to the journal: pbxcontrol/db/dataversion.py); on
    SQLite the entries after, the keys read first.

    With `fence` (PostgreSQL: the lease's `fence_params`), the lease's fence runs first, in the
    same statement as the entries when there are any; False when it found the lease gone:
    nothing was written, the caller rolls back (Transactions.run_kept)."""
    changes, machine = batch.changes, batch.machine
    if batch.statements is not None:  # PostgreSQL, prepared (journal entries first)
        statements = batch.statements
        if fence is not None:
            if statements and statements[0][0] is None:
                if not legwrites.record_fenced(conn, statements[0][1], fence):
                    return False
                statements = statements[1:]
            elif conn.execute(FENCE_POSTGRESQL, fence).first() is None:
                return False
        for statement, params in statements:
            if statement is None:
                journal.record_prepared(conn, params)
            else:
                conn.execute(statement, params)
        return True
    journalled = changes.inserts + changes.updates
    changed = [r["uniqueid"] for r in changes.updates] + changes.gone
    before = journal.scope_keys(conn, machine, changed)
    if changes.inserts:
        conn.execute(INSERT_LEGS, changes.inserts)
    if batch.updates:
        conn.execute(UPDATE_LEGS, batch.updates)
    if changes.ended:
        conn.execute(INSERT_HISTORY, changes.ended)
    if batch.gone:
        conn.execute(DELETE_LEGS, batch.gone)
    journal.record_legs(conn, machine, journalled, changes.gone, before)
    return True


def write(changes: Changes, machine: int, session: Session) -> None:
    """`write_prepared` of `prepare`, in one go."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    write_prepared(prepare(changes, machine, postgresql), session.connection())


def flush(live: LiveLegs, session: Session) -> Callable[[], None]:
    """Write every change since the last committed flush; call the returned function once
    the transaction has committed."""
    changes = live.changes()
    write(changes, live.machine, session)
    return changes.committed


def mark_synced(session: Session, machine: int, name: str, startup_time: str) -> None:
    """After a reconcile with Asterisk (the holder's fenced transaction): the machine's row
    gets the startup time its legs belong to and when (the database's clock), and its legs
    are recorded (again): those a watch flagged, and those a forget had ended that Asterisk
    still has (pbxcontrol.db.unrecorded)."""
    values = {
        "name": name,
        "startup_time": startup_time,
        "last_sync": db_now(session.get_bind().dialect.name),
    }
    done = session.execute(update(MACHINES).where(MACHINES.c.id == machine).values(values))
    if cast(CursorResult[Any], done).rowcount == 0:
        session.execute(insert(MACHINES).values(id=machine, **values))
    conn = session.connection()
    unrecorded.vouch(conn, machine)
    unrecorded.back_from_forgotten(conn, machine)


def heartbeat(session: Session, machine: int, name: str, values: dict[str, Any]) -> None:
    """The machine's status row (pbxcontrol.recorder.status): one UPDATE; the first beat of a
    machine never recorded before inserts its row."""
    done = session.execute(update(MACHINES).where(MACHINES.c.id == machine).values(values))
    if cast(CursorResult[Any], done).rowcount == 0:
        session.execute(insert(MACHINES).values(id=machine, name=name, **values))


def prune_old(
    with_db: Callable[[Callable[[Session], int], str], int | None],
    machine: int,
    cutoff: float,
    chunk: int,
    chunks: int,
) -> int:
    """Delete up to `chunks` x `chunk` history rows of `machine` that ended before `cutoff`,
    a chunk per transaction through `with_db` (the writer does not hold the database for
    long). Returns how many went."""
    total = 0
    for _ in range(chunks):
        gone = with_db(
            lambda session: prune_history(session, machine, cutoff, chunk), "pruning the history"
        )
        if gone is None:  # the database refused; with_db logged it, the next sweep retries
            break
        total += gone
        if gone < chunk:
            break
    return total


def prune_journal(
    with_db: Callable[[Callable[[Session], int], str], int | None], cutoff: float, chunk: int
) -> None:
    """Delete the change journal's entries written before `cutoff`, `chunk` per transaction
    (any recorder may: every one prunes the same shared journal)."""
    while (
        gone := with_db(lambda s: journal.prune(s.connection(), cutoff, chunk), "pruning")
    ) and gone >= chunk:
        pass


def prune_audit(
    with_db: Callable[[Callable[[Session], int], str], int | None],
    cutoff: float,
    chunk: int,
    chunks: int,
) -> int:
    """Delete up to `chunks` x `chunk` rows of the call-control audit (`call_actions`: every
    machine's, so any recorder may) written before `cutoff`, a chunk per transaction. Returns
    how many went."""
    total = 0
    for _ in range(chunks):
        gone = with_db(lambda s: _prune_audit_rows(s, cutoff, chunk), "pruning the audit")
        if gone is None:  # with_db logged it; the next sweep retries
            break
        total += gone
        if gone < chunk:
            break
    return total


def _prune_audit_rows(session: Session, cutoff: float, limit: int) -> int:
    # The intents of a request go with its audit row (they carry its `at`).
    intents = select(INTENTS.c.id).where(INTENTS.c.at < cutoff).limit(limit).scalar_subquery()
    session.execute(delete(INTENTS).where(INTENTS.c.id.in_(intents)))
    oldest = select(AUDIT.c.id).where(AUDIT.c.at < cutoff).limit(limit).scalar_subquery()
    result = session.execute(delete(AUDIT).where(AUDIT.c.id.in_(oldest)))
    return cast(CursorResult[Any], result).rowcount


def prune_history(session: Session, machine: int, cutoff: float, limit: int) -> int:
    """Delete up to `limit` history rows of `machine` that ended before `cutoff`; returns
    how many went."""
    oldest = (
        select(HISTORY.c.id)
        .where(HISTORY.c.machine == machine, HISTORY.c.ended < cutoff)
        .limit(limit)
        .scalar_subquery()
    )
    result = session.execute(delete(HISTORY).where(HISTORY.c.id.in_(oldest)))
    return cast(CursorResult[Any], result).rowcount
