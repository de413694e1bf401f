"""calls/active/list answered from the live legs held in memory (view.py): the scope's rows
from the per-customer index (for the system view, or a scope holding much of it, the kept
order), the request's filters, the list's order, the ready row objects joined once.

The same answer as the SQL of query.py, byte for byte, on both engines
(tests/plugins/active_calls/test_view.py compares them over random legs, requests and
provisioning changes). What cannot be answered alike stays in SQL: on PostgreSQL, the
case-insensitive number filters (starts/ends/contains), whose lower() follows the database's
locale; SQLite's lower() folds ASCII letters only, which is what `_fold` does.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection

from pbxcontrol.plugin import Caller, Journal

from . import monitored, query
from .params import ListRequest, TextFilter
from .view import AT, LegView, Row, sort_key

Check = Callable[[tuple[Any, ...]], bool]
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
#: A scope holding more than this share of all legs walks the kept order instead of sorting.
_WALK_SHARE = 8


def serves(wanted: ListRequest, dialect: str) -> bool:
    """Whether the view answers this request exactly as the SQL would (it holds the present:
    a past moment is answered by the SQL, past.py)."""
    if wanted.at is not None:
        return False
    return dialect == "sqlite" or all(t.mode == "exact" for t in wanted.texts)


def answer(
    view: LegView,
    conn: Connection,
    caller: Caller,
    wanted: ListRequest,
    scope: query.Scope | None,
    position: Journal.Position | None = None,
) -> Any:
    """The list's answer; `position`, if given, the journal's as this request read it first."""
    customers = query.scope_customers(conn, scope)
    lines = query.phone_lines(conn, caller, wanted.phone) if wanted.phone else None
    keep = row_filter(wanted, lines)
    view.current(conn, position)  # reads outside the lock; `seen` only moves forward
    with view.lock:
        found = None if customers is None else view.of_customers(customers)
        # The modes this viewer may see (monitored.py): the rows hold none of them.
        modes = monitored.visible(conn, caller, view.monitored) if not wanted.count else {}
        # Every leg (the system view, or a scope that holds them all), unfiltered:
        if keep is None and (found is None or len(found) == len(view.rows)):
            if wanted.count:
                return {"count": len(view.rows)}
            if not wanted.descending and not modes:  # the kept order's blocks (order.py)
                return view.ordered(wanted.sort).pieces(wanted.names)
        rows = _chosen(view, found, wanted.sort, keep)
    if wanted.count:
        return {"count": len(rows)}
    if wanted.descending:  # every ORDER BY term descending: exactly the reverse
        rows.reverse()
    parts = [row.named for row in rows] if wanted.names else [row.plain() for row in rows]
    if modes:
        parts = [_shown(row, part, modes) for row, part in zip(rows, parts, strict=True)]
    if len(parts) < 2:
        return orjson.Fragment(b"[" + b"".join(parts) + b"]")
    parts[0], parts[-1] = b"[" + parts[0], parts[-1] + b"]"  # one copy of the whole, not three
    return orjson.Fragment(b",".join(parts))


def _shown(row: Row, part: bytes, modes: dict[tuple[int, str], str]) -> bytes:
    mode = modes.get((row.values[AT["machine"]], row.values[AT["uniqueid"]]))
    return part if mode is None else monitored.show(part, mode)


def _chosen(
    view: LegView, found: set[Row] | None, sort: str, keep: Callable[[Row], bool] | None
) -> list[Row]:
    """The rows in the list's ascending order; `found`: the scope's rows (None: all)."""
    if found is None:
        if keep is None:
            return [entry[-1] for entry in view.ordered(sort)]
        return [entry[-1] for entry in view.ordered(sort) if keep(entry[-1])]
    if keep is not None:
        found = {row for row in found if keep(row)}
    if len(found) * _WALK_SHARE > len(view.rows):
        return [entry[-1] for entry in view.ordered(sort) if entry[-1] in found]
    return sorted(found, key=lambda row: sort_key(row, sort))


def row_filter(
    wanted: ListRequest, lines: set[tuple[str, int]] | None
) -> Callable[[Row], bool] | None:
    """The request's filters as one test of a row (None: keep every row)."""
    checks: list[Check] = []
    if wanted.directions:
        checks.append(_is_in(AT["direction"], set(wanted.directions)))
    if wanted.callid:
        checks.append(_equals(AT["callid"], wanted.callid))
    checks += [_equals(AT[column], value) for column, value in wanted.types.items()]
    checks += [_text(text) for text in wanted.texts]
    if lines is not None:
        checks.append(_from_line(lines))
    if not checks:
        return None
    return lambda row: all(check(row.values) for check in checks)


def _is_in(at: int, allowed: set[str]) -> Check:
    return lambda values: values[at] in allowed


def _equals(at: int, wanted: Any) -> Check:
    return lambda values: values[at] == wanted


def _text(text: TextFilter) -> Check:
    """Any of the filter's columns matches (shapes._match): exact as is, the other modes on
    ASCII-folded text, as SQLite's lower() ... LIKE lower(...) does."""
    columns = [AT[column] for column in text.columns]
    if text.mode == "exact":
        return lambda values: any(values[at] == text.value for at in columns)
    value = _fold(text.value)
    test: Callable[[str], bool] = {
        "starts": lambda s: s.startswith(value),
        "ends": lambda s: s.endswith(value),
        "contains": lambda s: value in s,
    }[text.mode]
    return lambda values: any(test(_fold(values[at])) for at in columns)


def _fold(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def _from_line(lines: set[tuple[str, int]]) -> Check:
    """The leg came from one of the phone's lines (shapes.conditions, `phone`)."""
    stype, snumber, scustomer = AT["stype"], AT["snumber"], AT["scustomer"]
    return lambda values: values[stype] == "phone" and (values[snumber], values[scustomer]) in lines
