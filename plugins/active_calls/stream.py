"""The live stream of calls/active/list (/api/stream/calls/active/list/): the list's own
parameters, scope and query, run on the legs the change journal names.

Who sees what is decided by one code path for both: the stream opens through the list's
`parse` and `resolve` (400/402), and every event comes from the list's statement restricted
to the changed legs — a leg the statement returns is an `upsert` (the list's row, names
included), a changed leg that the view's clients held and the statement no longer returns is
a `remove`. A remove is only ever sent for a leg this view showed (or, resuming, one whose
journal entries put it in the view's customers), so no client learns of a foreign leg.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import Connection

from pbxcontrol.plugin import ApiRequest, Caller, Event, Journal, OneSnapshot

from . import monitored, past, query, view_answers
from .listing import parse, resolve, rows_json
from .names import NameBook, named
from .params import ListRequest
from .view import AT, LegView, Row

Key = tuple[int, str]  # (machine, uniqueid)
SCUSTOMER, DCUSTOMER = AT["scustomer"], AT["dcustomer"]


def open_stream(
    request: ApiRequest, journal: Journal, history_days: int = 0, legs: LegView | None = None
) -> ListView | OneSnapshot:
    """The list's validation and scope (ApiError 400/402 as for the list), as a view; with
    `at`, the board at that moment as one snapshot, and the stream ends (SPEC §14). `legs`:
    the process's in-memory view of the live legs, which changes are answered from when it
    can (the hub brings it up to date before it hands the streams their changes)."""
    wanted, errors = parse(request, history_days)
    scope = resolve(request.conn, request.caller, wanted, errors)
    if wanted.at is None:
        served = view_answers.serves(wanted, request.conn.dialect.name)
        return ListView(request.caller, wanted, scope, legs if served else None)
    conn = request.conn
    statements, values = query.statement(wanted, scope, request.caller)
    past.tune(conn)
    if wanted.count:
        data = orjson.dumps({"count": conn.execute(statements.listing, values).scalar_one()})
    else:
        data = b'{"data":' + rows_json(conn, statements, values, None) + b"}"
    # The id: the journal's head the answer was read at (there is nothing to resume).
    return OneSnapshot(journal.position(conn).head, data)


class ListView:
    """calls/active/list for one (caller scope, parameters); shared by every stream of it."""

    def __init__(
        self,
        caller: Caller,
        wanted: ListRequest,
        scope: query.Scope | None,
        legs: LegView | None = None,
    ):
        self.caller, self.wanted, self.scope = caller, wanted, scope
        self.legs = legs  # answers changes without a query when current (_from_legs)
        self._keep: Callable[[Row], bool] | None = None  # the filters, with _mine
        # The same key the list's answers are cached under: who asks (scope) and what.
        self.key: Hashable = (*monitored.viewer_key(caller), repr(wanted))
        rows = replace(wanted, count=False)
        self._all, self._values = query.statement(rows, scope, caller, keyed=True)
        self._changed, _ = query.statement(rows, scope, caller, keyed=True, changed=True)
        self._count = query.statement(wanted, scope, caller)[0] if wanted.count else None
        self.held: set[Key] = set()  # what a client of this view may hold now
        self._mine: set[int] | None = None  # the scope's customers (until a reset)
        self._mine_known = False

    # -- StreamView ------------------------------------------------------------------------
    def snapshot(self, conn: Connection, replace: bool) -> bytes:
        if replace:  # after a reset too: the tree may have changed
            self._mine_known = False
        rows = self._rows(conn, self._all, {})
        keys = {key for key, _ in rows}
        self.held = keys if replace else self.held | keys
        if self._count is not None:
            return self._count_data(conn)
        return b'{"data":[' + ",".join(obj for _, obj in rows).encode() + b"]}"

    def changes(self, conn: Connection, entries: list[Journal.Entry]) -> list[Event]:
        """Only the legs the view may show now (their keys in its customers) or showed: a
        change of other customers' legs costs no query."""
        if not self._mine_known:
            self._mine, self._mine_known = self._customers(conn), True
            phone = self.wanted.phone
            lines = query.phone_lines(conn, self.caller, phone) if phone else None
            self._keep = view_answers.row_filter(self.wanted, lines)
        mine = self._mine
        if mine is not None:
            held = self.held
            entries = [
                e
                for e in entries
                if (e.machine, e.uniqueid) in held
                or (e.new is not None and (e.new[0] in mine or e.new[1] in mine))
            ]
        return self._events(conn, _last_ids(entries), self.held, update=True)

    def catch_up(self, conn: Connection, entries: list[Journal.Entry]) -> list[Event]:
        """A resuming client may hold any leg its journal entries put in the view's customers
        (before or after a change): those that are gone now get a remove."""
        mine = self._customers(conn)
        maybe_held = {
            (e.machine, e.uniqueid)
            for e in entries
            if mine is None or any(k and (k[0] in mine or k[1] in mine) for k in (e.old, e.new))
        }
        return self._events(conn, _last_ids(entries), maybe_held | self.held, update=False)

    def still_valid(self, conn: Connection) -> bool:
        try:
            resolve(conn, self.caller, self.wanted, [])
        except Exception:
            return False
        return True

    # -- helpers ---------------------------------------------------------------------------
    def _events(
        self, conn: Connection, last: dict[Key, int], held: set[Key], update: bool
    ) -> list[Event]:
        if not last:
            return []
        visible = self._from_legs(conn, last) if update else None
        if visible is None:
            visible = dict(self._rows(conn, self._changed, query.changed_values(list(last))))
        events: list[tuple[int, str, Key]] = []
        for key, ident in last.items():  # in id order (_last_ids)
            if key in visible:
                events.append((ident, "upsert", key))
            elif key in held:
                events.append((ident, "remove", key))
        if update:
            self.held |= {key for _, kind, key in events if kind == "upsert"}
            self.held -= {key for _, kind, key in events if kind == "remove"}
        else:
            self.held |= {key for _, kind, key in events if kind == "upsert"}
        if not events:
            return []
        if self._count is not None:  # one event, the count after all of them
            kind = "upsert" if any(k == "upsert" for _, k, _ in events) else "remove"
            count = self._count_of_legs(max(last.values())) if update else None
            data = self._count_data(conn) if count is None else orjson.dumps({"count": count})
            return [(events[-1][0], kind, data)]
        return [
            (ident, kind, visible[key].encode() if kind == "upsert" else _removed(key))
            for ident, kind, key in events
        ]

    def _from_legs(self, conn: Connection, last: dict[Key, int]) -> dict[Key, str] | None:
        """The changed legs this view shows now, as the list's rows, from the in-memory view
        when it is at least as new as the changes (else None: the SQL answers). Byte for byte
        the SQL's rows (tests/plugins/active_calls/test_view.py compares the two)."""
        legs = self.legs
        if legs is None or not self._mine_known:
            return None
        mine, keep, names = self._mine, self._keep, self.wanted.names
        newest = max(last.values())
        with legs.lock:
            if legs.seen is None or legs.seen.head < newest:
                return None
            visible: dict[Key, str] = {}
            for key in last:
                row = legs.rows.get(key)
                if row is None or (keep is not None and not keep(row)):
                    continue
                v = row.values
                if mine is None or v[SCUSTOMER] in mine or v[DCUSTOMER] in mine:
                    visible[key] = (row.named if names else row.plain()).decode()
            shown = legs.monitored & visible.keys()
        if not shown:
            return visible
        return dict(monitored.shown_rows(conn, self.caller, list(visible.items())))

    def _count_of_legs(self, newest: int) -> int | None:
        """The count from the in-memory view when it serves this view and is at least as new
        as the journal id `newest` (counted as the list's count is: view_answers), else None
        (the SQL counts): no query over every leg of the scope each round."""
        legs = self.legs
        if legs is None or not self._mine_known:
            return None
        keep = self._keep
        with legs.lock:
            if legs.seen is None or legs.seen.head < newest:
                return None
            rows = legs.rows.values() if self._mine is None else legs.of_customers(self._mine)
            return len(rows) if keep is None else sum(1 for row in rows if keep(row))

    def _rows(self, conn: Connection, statements: Any, extra: dict) -> list[tuple[Key, str]]:
        values = {**self._values, **extra}
        rows = conn.execute(statements.listing, values).all()
        if statements.names is None:
            found = [((row[0], row[1]), row[2]) for row in rows]
        else:
            book = NameBook(conn, statements.names, values)
            found = [((row[0], row[1]), named(book, *row[2:])) for row in rows]
        return monitored.shown_rows(conn, self.caller, found)  # the modes this viewer may see

    def _count_data(self, conn: Connection) -> bytes:
        assert self._count is not None
        return orjson.dumps({"count": conn.execute(self._count.listing, self._values).scalar_one()})

    def _customers(self, conn: Connection) -> set[int] | None:
        """The customers whose legs the view's scope covers (None: the system view)."""
        return query.scope_customers(conn, self.scope)


def _last_ids(entries: list[Journal.Entry]) -> dict[Key, int]:
    """Each changed leg and the id of its last change (a reset names no leg), in the order of
    those ids (the entries are in id order: read backwards, no sort)."""
    last: dict[Key, int] = {}
    for e in reversed(entries):
        key = (e.machine, e.uniqueid)
        if key not in last and not e.is_reset:
            last[key] = e.id
    return dict(reversed(last.items()))


def _removed(key: Key) -> bytes:
    return orjson.dumps({"uniqueid": key[1], "machine": key[0]})
