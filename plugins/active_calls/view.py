"""The live legs held in each API process, kept current from the change journal, so that a
computed calls/active/list is a few journal entries read and ready rows joined — not a query
over every leg with its names, as the first design ran on every change.

**What is held.** One `Row` per live leg: the list's JSON object for it with its names
(names depend on the leg's owner, never on who asks, so one copy serves every viewer), where
the names begin, and the few fields the list filters and sorts by. Indexes: the rows of each
customer (as either end of the leg, the list's scope rule) and, per sort field asked for so
far, every row in the list's order, kept in order as rows come and go.

**How it stays right.** Every answer first reads three counters in one statement: the change
journal's head and pruning watermark (pbxcontrol.db.journal) and the data version
(pbxcontrol.db.dataversion). Then (what changed is read outside the view's lock and swapped
in under it, unless another thread brought the view at least as far meanwhile):
- head moved: the journal's entries since the view's position name the legs that changed;
  those are read again (row JSON and names by the list's own SQL) and replace or remove what
  was held. Re-reading a leg is idempotent, so a read that already sees a later change is
  fine: the next catch-up applies that change's entry again.
- a `reset` entry (provisioning changed the tree, directory or lines: names and scopes may
  all change), entries pruned past the view's position, or very many changes: read all legs.
- the data version rose but the head did not: something wrote legs, tree, directory or lines
  without a journal entry (an operator's SQL, provisioning with nothing to list): read all.
  (A write without a journal entry that commits between two journalled ones is only picked up
  by the next reload: write legs through the recorder's store.)
- a request whose transaction sees an older head than the view (another thread caught up
  first) answers from the newer view: never older than the data its request read.
The view then answers at least as new as the journal head its request read, from the same
database every process and host shares: there is no notification to miss.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, select

from pbxcontrol.plugin import Journal, tables

from . import query, sqlterms
from .names import NameBook, NameStatements, named
from .names import statements as name_statements
from .order import Order

leg = tables.legs
Key = tuple[int, str]  # (machine, uniqueid)
#: The fields the list filters and sorts by, in a Row's `values`.
VALUES = (
    "machine",
    "uniqueid",
    "start",
    "scustomer",
    "dcustomer",
    "direction",
    "callid",
    "stype",
    "ctype",
    "dtype",
    "snumber",
    "cnumber",
    "dnumber",
    "peer",
    "callername_internal",
    "callername_external",
    "monitor",  # the real mode, never in the rows' JSON (monitored.py shows it per viewer)
)
AT = {name: i for i, name in enumerate(VALUES)}
#: Text values many legs share (directions, types, numbers, caller names): one copy each.
_SHARED = tuple(
    AT[name]
    for name in VALUES
    if name not in ("machine", "uniqueid", "start", "scustomer", "dcustomer", "peer")
)
_START, _UID, _MACHINE, _MONITOR = AT["start"], AT["uniqueid"], AT["machine"], AT["monitor"]
#: More changed legs than this in one catch-up, and than a third of those held: reading every
#: leg is cheaper. (Not a fixed bound alone: at 20,000+ legs and thousands of changes a second,
#: a reload took long enough for the next catch-up to pass it again, and again.)
MAX_CHANGED = 2000
_CHUNK = 500  # legs per IN list (SQLite's bound on parameters)
WAIT_READING = 2.0  # seconds a catch-up waits for another in flight before it reads itself


@dataclass(slots=True, eq=False)
class Row:
    id: int
    values: tuple[Any, ...]
    named: bytes  # the list's JSON object with its three names
    cut: int  # named[:cut] + b"}" is the object without names

    def plain(self) -> bytes:
        return self.named[: self.cut] + b"}"


def sort_key(row: Row, sort: str) -> tuple[Any, ...]:
    """The list's order (query._build): the sort field, then start, uniqueid and the row id."""
    v = row.values
    # The machine last: ids are unique at any one time, but SQLite reuses the id of a deleted
    # last row, and a catch-up may briefly hold both; (uniqueid, machine) always differ.
    if sort == "start":
        return (v[_START], v[_UID], row.id, v[_MACHINE])
    return (v[AT[sort]], v[_START], v[_UID], row.id, v[_MACHINE])


class LegView:
    """Every live leg as the list shows it, current to the journal head of the last request."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.lock = threading.Lock()
        self.rows: dict[Key, Row] = {}
        self.by_customer: dict[int, set[Row]] = {}
        self.orders: dict[str, Order] = {}  # sort -> every (*key, row) in order
        self.monitored: set[Key] = set()  # legs with a live monitoring session (few)
        self.seen: Journal.Position | None = None  # what the view was made current to
        self.reloads = 0  # full reads (tests look)
        #: The positions the catch-ups in flight read to; `swapped` is told when one ends.
        self.reading: list[Journal.Position] = []
        self.swapped = threading.Condition(self.lock)

    def current(
        self,
        conn: Connection,
        now: Journal.Position | None = None,
        batch: Journal.Batch | None = None,
    ) -> None:
        """Bring the view up to at least what this request's transaction sees (`now`: the
        journal's position it read, if it did already; `batch`: the entries up to it, if read
        too). Call WITHOUT `lock`: what changed is read from the database outside it and
        swapped in under it, so the stream hub's catch-up (and the streams' upserts after it)
        and other requests wait for a swap, never for another thread's SQL. Once it returns,
        `seen` is at least `now` (it only moves forward). A catch-up already in flight to at
        least `now` is waited for rather than read again (the hub's and a request's, after
        the same commit: the same legs read twice on a busy machine)."""
        if now is None:
            now = self.journal.position(conn)
        with self.lock:
            while not _at_least(self.seen, now) and any(_at_least(r, now) for r in self.reading):
                if not self.swapped.wait(WAIT_READING):
                    break  # a read that slow: read for ourselves
            if _at_least(self.seen, now):
                return
            seen = self.seen
            self.reading.append(now)
        try:
            self._catch_up(conn, seen, now, batch)
        finally:
            with self.lock:
                self.reading.remove(now)
                self.swapped.notify_all()

    def _catch_up(
        self,
        conn: Connection,
        seen: Journal.Position | None,
        now: Journal.Position,
        batch: Journal.Batch | None,
    ) -> None:
        if seen is None or now.pruned > seen.head:
            self._reload(conn, now)
        elif now.head > seen.head:
            if batch is not None and batch.after <= seen.head and batch.now.head == now.head:
                touched = batch.touched(seen.head)
            else:
                touched = self.journal.touched(conn, seen, now)
            if touched.reset or len(touched.legs) > max(MAX_CHANGED, len(self.rows) // 3):
                self._reload(conn, now)
            else:
                self._apply(conn, now, touched.legs)
        elif now.head == seen.head and now.version > seen.version:
            self._reload(conn, now)  # written without a journal entry

    def follow(self, conn: Connection, batch: Journal.Batch | None = None) -> None:
        """Catch up now, off the request path (the stream hub calls this when it has read new
        journal entries, with what it read), and join the changed blocks of the kinds of
        answer asked for lately (order.py); not before some request has wanted the view."""
        with self.lock:
            if self.seen is None:
                return
        # A request that caught up further meanwhile: `current` returns at once.
        self.current(conn, None if batch is None else batch.now, batch)
        with self.lock:  # the blocks a change touched, joined now rather than by the next answer
            for order in self.orders.values():
                order.refresh()

    def ordered(self, sort: str) -> Order:
        """Every row in the list's order for `sort`, kept in order from now on."""
        order = self.orders.get(sort)
        if order is None:
            entries = sorted((*sort_key(r, sort), r) for r in self.rows.values())
            order = self.orders[sort] = Order(entries)
        return order

    def of_customers(self, customers: Iterable[int]) -> set[Row]:
        found: set[Row] = set()
        for customer in customers:
            found |= self.by_customer.get(customer, set())
        return found

    # -- keeping current -------------------------------------------------------------------
    # Each reads first, without the lock, then swaps under it — unless another thread brought
    # the view at least as far meanwhile. Reading is idempotent and the view only moves
    # forward: rows read at `now` for every leg changed after the view's position when the
    # read began are right on top of any view between that and `now` (its later entries name
    # a subset of those legs). Neither moves `seen` before it has all it reads: a read cut
    # short (the database went away) leaves the reason to read again for the next request.
    def _reload(self, conn: Connection, now: Journal.Position) -> None:
        found = list(_read(conn, None))
        with self.lock:
            if _at_least(self.seen, now):
                return
            self.rows, self.by_customer, self.orders, self.monitored = {}, {}, {}, set()
            for key, row in found:
                self._add(key, row)
            self.seen = now
            self.reloads += 1

    def _apply(self, conn: Connection, now: Journal.Position, changed: set[Key]) -> None:
        keys = sorted(changed)
        found: dict[Key, Row] = {}
        for i in range(0, len(keys), _CHUNK):
            found.update(_read(conn, keys[i : i + _CHUNK]))
        with self.lock:
            if _at_least(self.seen, now):
                return
            for key in keys:  # every old row out first: a new row may reuse a gone row's id
                old = self.rows.pop(key, None)
                if old is not None:
                    self._forget(old)
            for key in keys:
                new = found.get(key)
                if new is not None:
                    self._add(key, new)
            self.seen = now

    def _add(self, key: Key, row: Row) -> None:
        self.rows[key] = row
        if row.values[_MONITOR]:
            self.monitored.add(key)
        for customer in _customers_of(row):
            self.by_customer.setdefault(customer, set()).add(row)
        for sort, order in self.orders.items():
            order.add((*sort_key(row, sort), row))

    def _forget(self, row: Row) -> None:
        self.monitored.discard((row.values[_MACHINE], row.values[_UID]))
        for customer in _customers_of(row):
            held = self.by_customer.get(customer)
            if held is not None:
                held.discard(row)
                if not held:
                    del self.by_customer[customer]
        for sort, order in self.orders.items():
            order.remove((*sort_key(row, sort), row))


def _at_least(position: Journal.Position | None, now: Journal.Position) -> bool:
    """`position` (a view's, or a catch-up's) is at least as new as `now`."""
    return position is not None and (
        position.head > now.head or (position.head == now.head and position.version >= now.version)
    )


def _customers_of(row: Row) -> set[int]:
    return {c for c in (row.values[AT["scustomer"]], row.values[AT["dcustomer"]]) if c}


@lru_cache(maxsize=2)
def _statements(changed: bool) -> tuple[Select, NameStatements]:
    """Every leg (or the legs named in `changed`) with its row JSON, by the list's SQL."""
    conditions = [query.changed_legs()] if changed else []
    columns = [leg.c.id, sqlterms.row_json_of_leg(), *(leg.c[name] for name in VALUES)]
    return select(*columns).where(*conditions), name_statements(conditions)


def _read(conn: Connection, keys: list[Key] | None) -> Iterator[tuple[Key, Row]]:
    listing, names = _statements(keys is not None)
    values = {} if keys is None else query.changed_values(keys)
    # Names first, then the rows streamed from the cursor (no list of them all). Either order
    # is safe: anything committed after the journal head this catch-up started from has an
    # entry after it, and the next catch-up reads that leg again.
    book = NameBook(conn, names, values)
    s, d = AT["scustomer"], AT["dcustomer"]
    numbers = AT["snumber"], AT["cnumber"], AT["dnumber"]
    for leg_id, obj, *fields in conn.execute(listing, values):
        for i in _SHARED:
            fields[i] = sys.intern(fields[i])
        full = named(book, obj, fields[s], fields[d], *(fields[i] for i in numbers)).encode()
        yield (fields[0], fields[1]), Row(leg_id, tuple(fields), full, len(obj.encode()) - 1)
