"""What a calls/active/list request selects, whatever the table it reads (the live legs, or
the ended ones at a past moment): its shape, and the conditions on a leg it makes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
)

from pbxcontrol.plugin import tables

from .names import NameStatements
from .params import TextFilter

tree, line = tables.customer_tree, tables.lines
ESCAPE = "/"
#: With names=1, the listing's columns after the row's JSON: what naming a row needs.
NAME_INPUTS = ("scustomer", "dcustomer", "snumber", "cnumber", "dnumber")


@dataclass(frozen=True)
class Shape:
    """A request without its values: which filters, sort, names, count; statements are built
    once per shape, with bound parameters for every value."""

    scope: tuple[bool, bool, bool] | None  # (subtree, min_depth?, max_depth?); None = system
    directions: bool
    callid: bool
    types: tuple[str, ...]
    texts: tuple[tuple[tuple[str, ...], str], ...]
    phone: bool
    count: bool
    names: bool
    sort: str
    descending: bool
    keyed: bool = False
    changed: bool = False
    past: bool = False  # at a past moment (`at`): live and ended legs as they were then


@dataclass(frozen=True)
class Statements:
    """What one shape of request runs: the listing (or count), and with names=1 the
    statements that fetch candidate names for the same legs."""

    listing: Select
    names: NameStatements | None = None


def phone_lines_of(me: int | ColumnElement[int], phone: str | ColumnElement[str]) -> Select:
    """Telephone lines in `me`'s subtree that `phone` names, by endpoint or by number (a
    number may name lines of several customers)."""
    return (
        select(line.c.number, line.c.customer_id)
        .join(tree, tree.c.descendant_id == line.c.customer_id)
        .where(tree.c.ancestor_id == me, or_(line.c.endpoint == phone, line.c.number == phone))
    )


def members(shape: Shape) -> Select:
    """The customers of a subtree scope (bound: scope, min_depth, max_depth)."""
    assert shape.scope is not None
    _, has_min, has_max = shape.scope
    found = select(tree.c.descendant_id).where(tree.c.ancestor_id == bindparam("scope"))
    if has_min:
        found = found.where(tree.c.depth >= bindparam("min_depth"))
    if has_max:
        found = found.where(tree.c.depth <= bindparam("max_depth"))
    return found


def conditions(shape: Shape, leg: FromClause) -> list[ColumnElement[bool]]:
    """The request's conditions on the legs of `leg` (a table with the leg columns)."""
    found = []
    if shape.scope is not None:
        if shape.scope[0]:
            mine = members(shape)
            found.append(or_(leg.c.scustomer.in_(mine), leg.c.dcustomer.in_(mine)))
        else:
            found.append(
                or_(leg.c.scustomer == bindparam("scope"), leg.c.dcustomer == bindparam("scope"))
            )
    if shape.directions:
        found.append(leg.c.direction.in_(bindparam("directions", expanding=True)))
    if shape.callid:
        found.append(leg.c.callid == bindparam("callid"))
    found += [leg.c[column] == bindparam(f"type_{column}") for column in shape.types]
    for i, (columns, mode) in enumerate(shape.texts):
        found.append(
            or_(*(_match(leg.c[c], mode, bindparam(f"text_{i}", type_=String)) for c in columns))
        )
    if shape.phone:
        # A leg's source is a line when the call came from that phone: the recorder gives
        # every leg of the call the originating line's number and customer.
        lines = phone_lines_of(bindparam("me"), bindparam("phone")).subquery()
        found.append(
            and_(
                leg.c.stype == "phone",
                exists().where(
                    lines.c.number == leg.c.snumber, lines.c.customer_id == leg.c.scustomer
                ),
            )
        )
    return found


def _match(column: ColumnElement[str], mode: str, value: ColumnElement[str]):
    if mode == "exact":
        return column == value
    # lower() on both sides: SQLite's LIKE ignores ASCII case and PostgreSQL's does not;
    # this answers alike on both.
    return func.lower(column).like(func.lower(value), escape=ESCAPE)


def pattern(wanted: TextFilter) -> str:
    """The bound value: the text itself for exact, else a LIKE pattern in which the user's
    % and _ are literal."""
    if wanted.mode == "exact":
        return wanted.value
    text = (
        wanted.value.replace(ESCAPE, ESCAPE * 2)
        .replace("%", ESCAPE + "%")
        .replace("_", ESCAPE + "_")
    )
    return {"starts": f"{text}%", "ends": f"%{text}", "contains": f"%{text}%"}[wanted.mode]
