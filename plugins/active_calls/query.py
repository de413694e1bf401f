"""The SQL of calls/active/list: who may be seen (scope), what was asked for, in what order."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Select, and_, false, func, or_, select

from pbxcontrol.plugin import Caller, tables

from .names import name_columns
from .params import ListRequest, TextFilter

leg = tables.Leg.__table__
tree = tables.CustomerTree.__table__
line = tables.Line.__table__


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
        select(tree.c.depth).where(tree.c.ancestor_id == ancestor,
                                   tree.c.descendant_id == customer)
    ).scalar()


def visible_lines(conn: Connection, caller: Caller, phone: str) -> list[tuple[str, int]]:
    """(number, customer) of the telephone lines in the caller's subtree that `phone` names,
    by endpoint or by number (a number may name lines of several customers)."""
    rows = conn.execute(
        select(line.c.number, line.c.customer_id)
        .join(tree, tree.c.descendant_id == line.c.customer_id)
        .where(tree.c.ancestor_id == caller.customer_id,
               or_(line.c.endpoint == phone, line.c.number == phone))
    )
    return [(r.number, r.customer_id) for r in rows]


def scope_condition(scope: Scope) -> ColumnElement[bool]:
    if not scope.subtree:
        return or_(leg.c.scustomer == scope.customer, leg.c.dcustomer == scope.customer)
    members = select(tree.c.descendant_id).where(tree.c.ancestor_id == scope.customer)
    if scope.min_depth:
        members = members.where(tree.c.depth >= scope.min_depth)
    if scope.max_depth is not None:
        members = members.where(tree.c.depth <= scope.max_depth)
    return or_(leg.c.scustomer.in_(members), leg.c.dcustomer.in_(members))


def statement(request: ListRequest, scope: Scope | None,
              lines: list[tuple[str, int]] | None) -> Select:
    conditions = [] if scope is None else [scope_condition(scope)]
    conditions += _filters(request, lines)
    if request.count:
        return select(func.count()).select_from(leg).where(*conditions)
    columns = [leg.c[name] for name in tables.LEG_FIELDS]
    if request.names:
        columns += name_columns(leg)
    # Ties by start then uniqueid (as documented), then the row id: uniqueids are only unique
    # per machine, and the order must be total to be deterministic.
    order = [leg.c.start, leg.c.uniqueid, leg.c.id]
    if request.sort != "start":
        order.insert(0, leg.c[request.sort])
    if request.descending:
        order = [column.desc() for column in order]
    return select(*columns).where(*conditions).order_by(*order)


def _filters(request: ListRequest, lines: list[tuple[str, int]] | None) -> list:
    conditions: list = []
    if request.directions:
        conditions.append(leg.c.direction.in_(request.directions))
    if request.callid:
        conditions.append(leg.c.callid == request.callid)
    conditions += [leg.c[column] == value for column, value in request.types.items()]
    conditions += [or_(*(_match(leg.c[c], f) for c in f.columns)) for f in request.texts]
    if lines is not None:
        # A leg's source is a line when the call came from that phone: the recorder gives
        # every leg of the call the originating line's number and customer.
        conditions.append(and_(leg.c.stype == "phone", or_(false(), *(
            and_(leg.c.snumber == number, leg.c.scustomer == customer)
            for number, customer in lines))))
    return conditions


def _match(column: ColumnElement[str], wanted: TextFilter) -> ColumnElement[bool]:
    # autoescape: % and _ typed by the user are literal. Case-insensitive so that SQLite
    # (LIKE ignores ASCII case) and PostgreSQL (LIKE does not) answer alike.
    if wanted.mode == "exact":
        return column == wanted.value
    if wanted.mode == "starts":
        return column.istartswith(wanted.value, autoescape=True)
    if wanted.mode == "ends":
        return column.iendswith(wanted.value, autoescape=True)
    return column.icontains(wanted.value, autoescape=True)
