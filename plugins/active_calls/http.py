"""The API function: parameters in, scope resolved against the tree, rows out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection

from pbxcontrol.plugin import ApiError, ApiRequest, Caller, tables

from . import params, query
from .cache import ResponseCache, data_version
from .names import NameBook
from .params import ListRequest

LEG_FIELDS = tables.LEG_FIELDS
PRIVILEGES = frozenset({"callshop", "telephone line reports", "user"})


def list_active_calls(request: ApiRequest, cache: ResponseCache | None = None) -> Any:
    wanted, errors = params.parse(request.params)
    caller = request.caller
    if wanted.customer == "system" and not caller.is_system_owner:
        # Permission outranks validation: a 402 is the one answer, whatever else is wrong.
        raise ApiError(402, [("customer", "Only the system owner may list the whole system.")])
    with request.sessions() as session:
        conn = session.connection()
        if cache is None or errors:
            return _answer(conn, caller, wanted, errors)
        # repr: ListRequest holds a dict (not hashable); it is built in a fixed order.
        key = (data_version(conn), caller.customer_id, caller.is_system_owner, repr(wanted))
        raw = cache.get(key)
        if raw is None:
            raw = orjson.dumps(_answer(conn, caller, wanted, errors))
            cache.put(key, raw)
        return orjson.Fragment(raw)


def _answer(conn: Connection, caller: Caller, wanted: ListRequest,
        errors: list[tuple[str, str]]) -> Any:
    scope = _scope(conn, caller, wanted, errors)
    if wanted.phone and not query.phone_is_visible(conn, caller, wanted.phone):
        errors.append(("phone", "is not a telephone line you can see"))
    if errors:
        raise ApiError(400, errors)
    statements, values = query.statement(wanted, scope, caller)
    if wanted.count:
        return {"count": conn.execute(statements.listing, values).scalar_one()}
    rows = conn.execute(statements.listing, values).all()
    if statements.names is None:
        return [dict(zip(LEG_FIELDS, row, strict=True)) for row in rows]
    book = NameBook(conn, statements.names, values)
    return [_named(book, row) for row in rows]


def _named(book: NameBook, row: Sequence[Any]) -> dict[str, Any]:
    fields = dict(zip(LEG_FIELDS, row, strict=True))
    scustomer, dcustomer = fields["scustomer"], fields["dcustomer"]
    owner = scustomer or dcustomer
    name = book.name
    fields["snumber_name"] = name(owner, scustomer, dcustomer, fields["snumber"])
    fields["cnumber_name"] = name(owner, scustomer, dcustomer, fields["cnumber"])
    fields["dnumber_name"] = name(owner, scustomer, dcustomer, fields["dnumber"])
    return fields


def _scope(conn: Connection, caller: Caller, wanted: ListRequest,
           errors: list[tuple[str, str]]) -> query.Scope | None:
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
