"""calls/active/list itself: parameters in, scope resolved against the tree, rows out."""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import Connection

from pbxcontrol.plugin import ApiError, ApiRequest, Caller, Journal, Pieces

from . import monitored, params, past, query, view_answers
from .cache import ResponseCache
from .names import NameBook, named
from .params import ListRequest
from .shapes import Statements
from .view import LegView

PRIVILEGES = frozenset({"callshop", "telephone line reports", "user"})
DAY = 86400


def list_active_calls(
    request: ApiRequest,
    journal: Journal,
    cache: ResponseCache | None = None,
    view: LegView | None = None,
    history_days: int = 0,
) -> Any:
    wanted, errors = parse(request, history_days)
    caller = request.caller
    conn = request.conn
    # Not a past moment either: the data version counts changes of the live legs, and an
    # ended leg can reach the history without one (born and gone within one batch).
    if cache is None or errors or wanted.at is not None:
        return _answer(conn, caller, wanted, errors, view)
    # Read before the data: the answer is then at least as new as the version it is kept under.
    # With the in-memory view, the version comes with the journal's position, which the view
    # needs next anyway (one statement, not two).
    position = journal.position(conn) if view is not None else None
    version = journal.version(conn) if position is None else position.version
    # repr: ListRequest holds a dict (not hashable); it is built in a fixed order.
    key = (*monitored.viewer_key(caller), repr(wanted))
    raw = cache.get(version, key)
    if raw is None:
        found = _answer(conn, caller, wanted, errors, view, position)
        # Pieces are kept as they are: serialising them would copy the whole answer.
        raw = found if isinstance(found, Pieces) else orjson.dumps(found)
        cache.put(version, key, raw)
    return raw if isinstance(raw, Pieces) else orjson.Fragment(raw)


def parse(request: ApiRequest, history_days: int = 0) -> tuple[ListRequest, list[tuple[str, str]]]:
    """The parameters, and what is wrong with them; 402 for the system view unless allowed.
    `at` must be a past moment whose ended legs are all still kept ([recorder] history_days:
    the recorder deletes those that ended longer ago; 0 keeps them forever)."""
    wanted, errors = params.parse(request.params)
    if wanted.customer == "system" and not request.caller.is_system_owner:
        # Permission outranks validation: a 402 is the one answer, whatever else is wrong.
        raise ApiError(402, [("customer", "Only the system owner may list the whole system.")])
    if wanted.at is not None:
        now = time.time()
        if wanted.at > now:
            errors.append(("at", "is in the future"))
        elif history_days and wanted.at < now - history_days * DAY:
            errors.append(("at", f"is before the kept history (the last {history_days} days)"))
    return wanted, errors


def resolve(
    conn: Connection, caller: Caller, wanted: ListRequest, errors: list[tuple[str, str]]
) -> query.Scope | None:
    """Who may be seen, for the list and its stream alike: the scope, checked against the
    tree now; 400 with every invalid parameter."""
    scope = _scope(conn, caller, wanted, errors)
    if wanted.phone and not query.phone_is_visible(conn, caller, wanted.phone):
        errors.append(("phone", "is not a telephone line you can see"))
    if errors:
        raise ApiError(400, errors)
    return scope


def _answer(
    conn: Connection,
    caller: Caller,
    wanted: ListRequest,
    errors: list[tuple[str, str]],
    view: LegView | None = None,
    position: Journal.Position | None = None,
) -> Any:
    scope = resolve(conn, caller, wanted, errors)
    if view is not None and view_answers.serves(wanted, conn.dialect.name):
        return view_answers.answer(view, conn, caller, wanted, scope, position)
    statements, values = query.statement(wanted, scope, caller)
    if wanted.at is not None:
        past.tune(conn)
    if wanted.count:
        return {"count": conn.execute(statements.listing, values).scalar_one()}
    live = caller if wanted.at is None else None  # a past moment shows no mode
    return orjson.Fragment(rows_json(conn, statements, values, live))


def rows_json(
    conn: Connection, statements: Statements, values: dict[str, Any], caller: Caller | None
) -> bytes:
    """The listing's rows as one JSON array; with `caller`, the modes they may see
    (monitored.py: only live legs are monitored, so a past moment's rows need none)."""
    rows = conn.execute(statements.listing, values).all()
    # Each row arrives as its JSON object text (sqlterms.row_json): joined, not re-serialised.
    if statements.names is None:
        objects = [row[0] for row in rows]
    else:
        book = NameBook(conn, statements.names, values)
        objects = [named(book, *row) for row in rows]
    modes = monitored.visible(conn, caller) if caller is not None and objects else {}
    if modes:
        objects = [_shown(obj, modes) for obj in objects]
    return f"[{','.join(objects)}]".encode()


def _shown(obj: str, modes: dict[tuple[int, str], str]) -> str:
    """A row of a monitored leg with its mode (parsed only when this viewer may see some)."""
    if '"monitor":""' not in obj:
        return obj
    row = orjson.loads(obj)
    mode = modes.get((row["machine"], row["uniqueid"]))
    return obj if mode is None else monitored.show(obj.encode(), mode).decode()


def _scope(
    conn: Connection, caller: Caller, wanted: ListRequest, errors: list[tuple[str, str]]
) -> query.Scope | None:
    own = caller.customer_id
    customer = wanted.customer
    if customer == "system":
        return None
    if customer == "all":
        return query.Scope(own, subtree=True, min_depth=1, max_depth=1)
    if customer == "recursive":
        # "All customers under" the caller's customer: its own legs are not under it (ask
        # with recursive=1 and no customer for those too).
        return query.Scope(own, subtree=True, min_depth=1)
    if isinstance(customer, int) and customer != own:
        if query.customer_depth(conn, own, customer) is None:
            errors.append(("customer", "is not your customer or one under it"))
            return None
        own = customer
    return query.Scope(own, subtree=wanted.recursive)
