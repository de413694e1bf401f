"""The change journal: what changed in the active list, in commit order, for live streams.

Writers append in the transaction that makes the change: the recorder one entry per leg it
inserts, updates or removes (with the leg's scope keys before and after, so a reader can tell
a leg that left a customer's scope), provisioning one `reset` entry when what the API lists
may have changed wholesale (customer tree, directory, lines).

**Ids are in commit order, on PostgreSQL too, without a row every writer updates.** A reader
that has seen id N never later sees a smaller id commit (SPEC §8: a stream's Last-Event-ID
resumes exactly).

- PostgreSQL: ids come from the sequence `leg_changes_ids`, which hands them out at once, in
  no particular commit order; one call (`pbx_journal_append`, migration 0016) marks the
  transaction as a journal writer, takes the ids and inserts the entries. Readers read only up
  to a commit-ordered horizon, below which every id that will ever commit has committed
  (pbxcontrol/db/horizon.py has the argument). Nothing is shared between writers but the
  sequence, which never waits: fifty recorders write side by side. Ids have gaps (a rolled-back
  transaction's), which readers skip. Writers no longer NOTIFY (PostgreSQL serialises the commits
  of transactions that do): the stream hub polls the head instead (pbxcontrol/streams/hub.py).
- SQLite has one writer at a time: ids come from the counter row `journal`
  (`UPDATE counters SET value = value + n ... RETURNING`), handed out and committed one
  transaction after the other, and the head is that row.

Retention: entries older than `[recorder] journal_seconds` are pruned in short transactions;
the counter row `journal_pruned` says up to which id they are gone, so a reader knows whether
every change since an id is still here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import Connection, bindparam, delete, insert, select, text, update

from pbxcontrol.db import horizon
from pbxcontrol.db.dataversion import API_DATA, data_version
from pbxcontrol.db.models import LEGS_TABLE, Base, LegChange

JOURNAL = Base.metadata.tables[LegChange.__tablename__]
COUNTERS = Base.metadata.tables["counters"]
# The SQLite writer's statements, built once (a recorder writes them for every event it
# records: building and keying them again each time was a good part of its CPU).
_SCOPE_KEYS = select(LEGS_TABLE.c.uniqueid, LEGS_TABLE.c.scustomer, LEGS_TABLE.c.dcustomer).where(
    LEGS_TABLE.c.machine == bindparam("m"),
    LEGS_TABLE.c.uniqueid.in_(bindparam("uids", expanding=True)),
)
_TAKE_IDS = (
    update(COUNTERS)
    .where(COUNTERS.c.name == "journal")
    .values(value=COUNTERS.c.value + bindparam("n"))
    .returning(COUNTERS.c.value)
)
_INSERT_ENTRIES = insert(JOURNAL)
#: A PostgreSQL NOTIFY channel the stream hub listens on (writers do not notify: see above).
CHANNEL = "pbxcontrol_journal"
UPSERT, REMOVE, RESET = "upsert", "remove", "reset"

Keys = tuple[int, int]  # (scustomer, dcustomer)
Leg = tuple[int, str]  # (machine, uniqueid)


@dataclass(frozen=True)
class Entry:
    id: int
    machine: int
    uniqueid: str
    op: str  # UPSERT, REMOVE or RESET
    old: Keys | None
    new: Keys | None

    @property
    def is_upsert(self) -> bool:
        """The leg was inserted or updated."""
        return self.op == UPSERT

    @property
    def is_remove(self) -> bool:
        """The leg was deleted (the call ended)."""
        return self.op == REMOVE

    @property
    def is_reset(self) -> bool:
        """Names no leg: everything may have changed (provisioning)."""
        return self.op == RESET


def scope_keys(conn: Connection, machine: int, uniqueids: Sequence[str]) -> dict[str, Keys]:
    """(scustomer, dcustomer) of these live legs as stored now: read before changing them."""
    if not uniqueids:
        return {}
    rows = conn.execute(_SCOPE_KEYS, {"m": machine, "uids": list(set(uniqueids))})
    return {uid: (s, d) for uid, s, d in rows}


def record_legs(
    conn: Connection,
    machine: int,
    rows: Iterable[Mapping[str, Any]],
    gone: Iterable[str],
    before: Mapping[str, Keys] | None = None,
) -> None:
    """Entries for legs written (`rows`, inserted or updated) and deleted (`gone`) in this
    transaction; `before` holds their keys as they were (scope_keys). Without `before` the keys
    are read from the legs table as this statement finds them: call it then before writing the
    legs (the recorder does, on PostgreSQL: one round trip fewer)."""
    known = before or {}
    changes: list[tuple[str, str, Keys | None, Keys | None]] = [
        (row["uniqueid"], UPSERT, known.get(row["uniqueid"]), (row["scustomer"], row["dcustomer"]))
        for row in rows
    ]
    changes += [(uid, REMOVE, known.get(uid), None) for uid in gone]
    if before is None and conn.dialect.name != "postgresql":
        found = scope_keys(conn, machine, [uid for uid, _, _, _ in changes])
        changes = [(uid, op, found.get(uid), new) for uid, op, _, new in changes]
    _append(conn, [(machine, uid, op, old, new) for uid, op, old, new in changes], before is None)


def legs_entries(
    machine: int, rows: Sequence[Mapping[str, Any]], gone: list[str]
) -> dict[str, Any]:
    """PostgreSQL: `record_legs`' parameters without `before` (the keys before are looked up as
    the statement runs), made before the transaction begins; run them with `record_prepared`."""
    return {
        "m": machine,
        "uids": [row["uniqueid"] for row in rows] + gone,
        "ops": [UPSERT] * len(rows) + [REMOVE] * len(gone),
        "old_s": [None] * (len(rows) + len(gone)),
        "old_d": [None] * (len(rows) + len(gone)),
        "new_s": [row["scustomer"] for row in rows] + [None] * len(gone),
        "new_d": [row["dcustomer"] for row in rows] + [None] * len(gone),
        "look_up": True,
    }


def record_prepared(conn: Connection, entries: dict[str, Any]) -> None:
    """The entries `legs_entries` made, in this transaction (PostgreSQL)."""
    conn.execute(_APPEND, {**entries, "at": time.time()})


def record_reset(conn: Connection) -> None:
    """Everything may have changed (visibility or names): streams start afresh."""
    _append(conn, [(0, "", RESET, None, None)])


Change: TypeAlias = tuple[int, str, str, Keys | None, Keys | None]

_APPEND = text(
    "SELECT pbx_journal_append(:m, :uids, :ops, :old_s, :old_d, :new_s, :new_d, :look_up, :at)"
)


def _append(conn: Connection, changes: list[Change], look_up: bool = False) -> None:
    if not changes:
        return
    if conn.dialect.name == "postgresql":
        _append_postgresql(conn, changes, look_up)
        return
    last = conn.execute(_TAKE_IDS, {"n": len(changes)}).scalar_one()
    now = time.time()
    first = last - len(changes) + 1
    conn.execute(
        _INSERT_ENTRIES,
        [
            {
                "id": first + i,
                "machine": machine,
                "uniqueid": uid,
                "op": op,
                "old_scustomer": old[0] if old else None,
                "old_dcustomer": old[1] if old else None,
                "new_scustomer": new[0] if new else None,
                "new_dcustomer": new[1] if new else None,
                "at": now,
            }
            for i, (machine, uid, op, old, new) in enumerate(changes)
        ],
    )


def _append_postgresql(conn: Connection, changes: list[Change], look_up: bool) -> None:
    """One call per machine named (a recorder's batch names one): ids, marker, entries."""
    now = time.time()
    for machine in dict.fromkeys(change[0] for change in changes):
        mine = [c for c in changes if c[0] == machine]
        conn.execute(
            _APPEND,
            {
                "m": machine,
                "uids": [c[1] for c in mine],
                "ops": [c[2] for c in mine],
                "old_s": [c[3][0] if c[3] else None for c in mine],
                "old_d": [c[3][1] if c[3] else None for c in mine],
                "new_s": [c[4][0] if c[4] else None for c in mine],
                "new_d": [c[4][1] if c[4] else None for c in mine],
                "look_up": look_up,
                "at": now,
            },
        )


@dataclass(frozen=True)
class Position:
    """The journal's head and pruning watermark with the data version, read together (one
    statement: one snapshot on either engine)."""

    version: int
    head: int
    pruned: int


_POSITION = select(COUNTERS.c.name, COUNTERS.c.value).where(
    COUNTERS.c.name.in_(("journal", "journal_pruned", API_DATA))
)


_PROBE = text("SELECT last, writers, counted, pruned FROM pbx_journal_probe()")


def position(conn: Connection) -> Position:
    """Where the journal is. PostgreSQL: the head is the commit-ordered horizon
    (pbxcontrol/db/horizon.py) and the data version that head plus the counter the triggers
    keep for writes without journal entries (pbxcontrol/db/dataversion.py)."""
    if conn.dialect.name == "postgresql":
        sent = time.monotonic()
        last, writers, counted, pruned = conn.execute(_PROBE).one()
        head = horizon.of(conn).advance(last, writers or (), sent, time.monotonic())
        return Position(head + (counted or 0), head, pruned or 0)
    values = {name: value for name, value in conn.execute(_POSITION)}
    return Position(
        values.get(API_DATA, 0), values.get("journal", 0), values.get("journal_pruned", 0)
    )


def settling(conn: Connection) -> bool:
    """PostgreSQL: the last position waited for writers in flight; read it again soon."""
    return conn.dialect.name == "postgresql" and horizon.of(conn).settling


def head(conn: Connection) -> tuple[int, int]:
    """(the last id committed, the last id pruned): entries pruned < id <= last are kept."""
    now = position(conn)
    return now.head, now.pruned


_SINCE = (
    select(
        JOURNAL.c.id,
        JOURNAL.c.machine,
        JOURNAL.c.uniqueid,
        JOURNAL.c.op,
        JOURNAL.c.old_scustomer,
        JOURNAL.c.old_dcustomer,
        JOURNAL.c.new_scustomer,
        JOURNAL.c.new_dcustomer,
    )
    .where(JOURNAL.c.id > bindparam("after"), JOURNAL.c.id <= bindparam("upto"))
    .order_by(JOURNAL.c.id)
)
#: Built once (the stream hub reads entries every round: no statement built, keyed, looked up).
_SINCE_LIMITED = _SINCE.limit(bindparam("limit"))


def since(conn: Connection, after: int, upto: int, limit: int | None = None) -> list[Entry]:
    """The entries after `after` up to `upto`, in order (the first `limit` of them)."""
    values = {"after": after, "upto": upto}
    if limit is not None:
        values["limit"] = limit
    rows = conn.execute(_SINCE if limit is None else _SINCE_LIMITED, values)
    return [
        Entry(
            ident,
            machine,
            uniqueid,
            op,
            None if old_s is None else (old_s, old_d),
            None if new_s is None else (new_s, new_d),
        )
        for ident, machine, uniqueid, op, old_s, old_d, new_s, new_d in rows
    ]


_TOUCHED = (
    select(JOURNAL.c.machine, JOURNAL.c.uniqueid, JOURNAL.c.op)
    .where(JOURNAL.c.id > bindparam("after"), JOURNAL.c.id <= bindparam("upto"))
    .order_by(JOURNAL.c.id)
)


def touched(conn: Connection, after: int, upto: int) -> list[tuple[int, str, str]]:
    """(machine, uniqueid, op) of the entries after `after` up to `upto`, in order: what a
    reader that reads the legs again needs (`since` has the scope keys too)."""
    return [(m, u, op) for m, u, op in conn.execute(_TOUCHED, {"after": after, "upto": upto})]


def prune(conn: Connection, cutoff: float, limit: int) -> int:
    """Delete up to `limit` of the oldest entries written before `cutoff`; returns how many."""
    ids = conn.execute(
        select(JOURNAL.c.id).where(JOURNAL.c.at < cutoff).order_by(JOURNAL.c.id).limit(limit)
    ).scalars()
    top = max(ids, default=None)
    if top is None:
        return 0
    # The watermark first: its row lock orders concurrent prunes of several recorders.
    conn.execute(
        update(COUNTERS)
        .where(COUNTERS.c.name == "journal_pruned", COUNTERS.c.value < top)
        .values(value=top)
    )
    gone = conn.execute(delete(JOURNAL).where(JOURNAL.c.id <= top))
    return int(gone.rowcount or 0)


@dataclass(frozen=True)
class Touched:
    """What changed between two positions: the legs, and whether a reset is among them (then
    any leg, its names or its scope may have changed)."""

    legs: set[Leg]
    reset: bool


@dataclass(frozen=True)
class Batch:
    """What the stream hub read in one round: `entries`, every entry after the id `after` up
    to `now.head`, in order, with the position `now` it read first. A follower that has seen
    up to some id between the two takes its changes from here, not from the database again."""

    after: int
    now: Position
    entries: list[Entry]

    def touched(self, seen: int) -> Touched:
        """The legs changed after `seen` (after <= seen <= now.head)."""
        legs: set[Leg] = set()
        reset = False
        for e in self.entries:
            if e.id > seen:
                if e.op == RESET:
                    reset = True
                else:
                    legs.add((e.machine, e.uniqueid))
        return Touched(legs, reset)


#: A journal follower: called with the hub's connection and what the round read (None: the
#: round read only part of the new entries; the follower reads for itself).
Follower: TypeAlias = Callable[[Connection, "Batch | None"], None]


class Journal:
    """The change journal as a plugin sees it (`ctx.journal`): one object, a few verbs; the
    functions above are the core's (writers, pruning, the stream hub)."""

    Entry: TypeAlias = Entry
    Position: TypeAlias = Position
    Batch: TypeAlias = Batch

    def __init__(self, follow: Callable[[Follower], None] | None = None):
        self._follow = follow

    def position(self, conn: Connection) -> Position:
        """Where the journal is, with the data version, in one statement."""
        return position(conn)

    def version(self, conn: Connection) -> int | None:
        """The data version alone (pbxcontrol.db.dataversion; None on a database without its
        counter): one read, for a cache keyed by it."""
        return data_version(conn)

    def since(self, conn: Connection, after: Position, upto: Position) -> list[Entry]:
        """The entries after `after` up to `upto`, in order."""
        return since(conn, after.head, upto.head)

    def touched(self, conn: Connection, after: Position, upto: Position) -> Touched:
        """The legs the entries after `after` up to `upto` name (fewer columns than `since`:
        what a reader that reads the legs again needs)."""
        entries = touched(conn, after.head, upto.head)
        return Touched(
            {(machine, uid) for machine, uid, op in entries if op != RESET},
            any(op == RESET for _, _, op in entries),
        )

    def follow(self, follower: Follower) -> None:
        """`follower(conn, batch)` is called in the API process's stream hub thread, on the
        hub's connection, each time the hub has read new entries, with what it read (a
        `Batch`; None when it read only part of them): at once after a commit of a recorder in
        the same process (`serve`), and within the hub's poll (0.1 s on SQLite, 0.05 s on
        PostgreSQL). For keeping in-memory state current off the request path without
        reading the journal again; it must be quick, and what it raises is logged, not
        propagated. A process that serves no HTTP (the command-line tools) never calls it."""
        if self._follow is not None:
            self._follow(follower)
