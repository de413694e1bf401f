"""The SQL of calls/active/list: who may be seen (scope), what was asked for, in what order.

Statements are built once per *shape* of request (which filters, sort, names, count) with bound
parameters for every value, and cached: building them costs more Python time than a small
listing takes SQLite to run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles

from pbxcontrol.plugin import Caller, tables

from . import past
from .names import statements as name_statements
from .params import ListRequest
from .shapes import NAME_INPUTS, Shape, Statements, pattern, phone_lines_of
from .shapes import conditions as shape_conditions
from .sqlterms import ordered, row_json_of_leg

tree, leg = tables.customer_tree, tables.legs


@dataclass(frozen=True)
class Scope:
    """Customers whose legs are visible: `customer` alone, or the customers `min_depth` or more
    (at most `max_depth`) levels under it. None as a whole means the system view."""

    customer: int
    subtree: bool = False
    min_depth: int = 0
    max_depth: int | None = None


def customer_depth(conn: Connection, ancestor: int, customer: int) -> int | None:
    """How far `customer` is under `ancestor` (0 = itself), or None if it is not under it."""
    return conn.execute(
        select(tree.c.depth).where(tree.c.ancestor_id == ancestor, tree.c.descendant_id == customer)
    ).scalar()


def phone_is_visible(conn: Connection, caller: Caller, phone: str) -> bool:
    return conn.execute(select(exists(phone_lines_of(caller.customer_id, phone)))).scalar_one()


def statement(
    request: ListRequest,
    scope: Scope | None,
    caller: Caller,
    *,
    keyed: bool = False,
    changed: bool = False,
) -> tuple[Statements, dict[str, Any]]:
    """The statements for this request and the values of their parameters. For the stream:
    `keyed` starts each row with its (machine, uniqueid); `changed` lists only the legs whose
    (machine, uniqueid) the caller binds with `changed_values`."""
    values: dict[str, Any] = {"me": caller.customer_id}
    scope_shape = None
    if scope is not None:
        values["scope"] = scope.customer
        values["min_depth"] = scope.min_depth
        values["max_depth"] = scope.max_depth
        scope_shape = (scope.subtree, scope.min_depth > 0, scope.max_depth is not None)
    values["directions"] = list(request.directions)
    values["callid"] = request.callid
    values["phone"] = request.phone
    for column, value in request.types.items():
        values[f"type_{column}"] = value
    for i, wanted in enumerate(request.texts):
        values[f"text_{i}"] = pattern(wanted)
    if request.at is not None:  # `start` holds whole seconds: compared with whole seconds
        values["at"], values["at_second"] = request.at, math.floor(request.at)
    shape = Shape(
        scope=scope_shape,
        directions=bool(request.directions),
        callid=bool(request.callid),
        types=tuple(request.types),
        texts=tuple((t.columns, t.mode) for t in request.texts),
        phone=bool(request.phone),
        count=request.count,
        names=request.names,
        sort=request.sort,
        descending=request.descending,
        keyed=keyed,
        changed=changed,
        past=request.at is not None,
    )
    return _build(shape), values


@lru_cache(maxsize=8)
def targets(by_callid: bool, machine: bool) -> Select:
    """(machine, uniqueid) of the legs of a call (`callid`) or the leg (`uniqueid`), on
    `machine` if given, that the person may act on: the list's own subtree rule (scope =
    their customer, with recursive=1), the same conditions `calls/active/list` runs. One
    statement whether the leg is missing or invisible, so neither the answer nor its timing
    tells the two apart."""
    shape = Shape(
        scope=(True, False, False),
        directions=False,
        callid=by_callid,
        types=(),
        texts=(),
        phone=False,
        count=False,
        names=False,
        sort="start",
        descending=False,
    )
    conditions = shape_conditions(shape, leg)
    if not by_callid:
        conditions.append(leg.c.uniqueid == bindparam("uniqueid"))
    if machine:
        conditions.append(leg.c.machine == bindparam("machine"))
    return select(leg.c.machine, leg.c.uniqueid).where(*conditions).order_by(leg.c.id)


@lru_cache(maxsize=1024)
def _build(shape: Shape) -> Statements:
    if shape.past:
        return past.build(shape)
    conditions = shape_conditions(shape, leg)
    if shape.count:
        return Statements(select(func.count()).select_from(leg).where(*conditions))
    if shape.changed:  # the same conditions, on the legs that changed
        conditions.append(changed_legs())
    columns: list[ColumnElement[Any]] = [row_json_of_leg()]
    if shape.names:
        columns += [leg.c[name] for name in NAME_INPUTS]
    if shape.keyed:
        columns = [leg.c.machine, leg.c.uniqueid, *columns]
    # Ties by start then uniqueid (as documented), then the row id: uniqueids are only unique
    # per machine, and the order must be total to be deterministic.
    order: list[ColumnElement[Any]] = [leg.c.start, ordered(leg.c.uniqueid), leg.c.id]
    if shape.sort != "start":
        order.insert(0, ordered(leg.c[shape.sort]))
    if shape.descending:
        order = [column.desc() for column in order]
    listing = select(*columns).where(*conditions).order_by(*order)
    return Statements(listing, name_statements(conditions) if shape.names else None)


def changed_legs() -> ColumnElement[bool]:
    """The legs whose (machine, uniqueid) are bound by `changed_values`. A row-value IN alone
    makes SQLite scan every leg; the machine and uniqueid lists first let both engines probe
    the unique (machine, uniqueid) index, and the row values keep the answer exact. On
    PostgreSQL the two lists are bound as arrays (`= ANY`): one statement text whatever the
    number of legs — an expanding IN is rendered and parsed again for every count, which was
    most of the stream hub's time in a 50-machine busy hour — and no row values, so a leg with
    a listed machine and a listed uniqueid of another listed leg may come too: every caller
    looks up the legs it asked for, and ignores it."""
    return _Changed()


class _Changed(ColumnElement[bool]):
    """changed_legs(), compiled per engine (_compile_changed). No state of its own, but said
    so: ColumnElement has no cache key, and a statement holding an element without one is
    compiled again at every execution (a fifth of the stream hub's time at 10 machines)."""

    inherit_cache = True
    _traverse_internals: list = []
    type = Boolean()


@compiles(_Changed)
def _compile_changed(element: _Changed, compiler: Any, **kw: Any) -> str:
    key = tuple_(leg.c.machine, leg.c.uniqueid)
    return compiler.process(
        and_(
            leg.c.machine.in_(bindparam("changed_machines", expanding=True)),
            leg.c.uniqueid.in_(bindparam("changed_uids", expanding=True)),
            key.in_(bindparam("changed", expanding=True)),
        ),
        **kw,
    )


@compiles(_Changed, "postgresql")
def _compile_changed_pg(element: _Changed, compiler: Any, **kw: Any) -> str:
    machines = bindparam("changed_machines", type_=ARRAY(Integer))
    uids = bindparam("changed_uids", type_=ARRAY(String))
    return compiler.process(
        and_(leg.c.machine == any_(machines), leg.c.uniqueid == any_(uids)), **kw
    )


def changed_values(keys: list[tuple[int, str]]) -> dict[str, Any]:
    return {
        "changed": keys,
        "changed_machines": sorted({m for m, _ in keys}),
        "changed_uids": sorted({u for _, u in keys}),
    }


def scope_customers(conn: Connection, scope: Scope | None) -> set[int] | None:
    """The customers whose legs `scope` covers (None: the system view)."""
    if scope is None:
        return None
    if not scope.subtree:
        return {scope.customer}
    members = select(tree.c.descendant_id).where(
        tree.c.ancestor_id == scope.customer, tree.c.depth >= scope.min_depth
    )
    if scope.max_depth is not None:
        members = members.where(tree.c.depth <= scope.max_depth)
    return set(conn.execute(members).scalars())


def phone_lines(conn: Connection, caller: Caller, phone: str) -> set[tuple[str, int]]:
    """(number, customer) of the lines `phone` names in the caller's subtree."""
    return {(n, c) for n, c in conn.execute(phone_lines_of(caller.customer_id, phone))}
