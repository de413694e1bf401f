"""Number names (names=1): nearest customer's directory entry, then global, then a line."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, case, func, literal, select

from pbxcontrol.plugin import tables

NAMED_NUMBERS = ("snumber", "cnumber", "dnumber")


def name_columns(leg: Table) -> list[ColumnElement[str]]:
    """`<number>_name` for snumber, cnumber and dnumber of each leg, as correlated subqueries
    (each an index probe per row, so the cost follows the number of rows returned)."""
    # The leg's owner: the customer billed for it, else the one it was routed to.
    owner = case((leg.c.scustomer != 0, leg.c.scustomer), else_=leg.c.dcustomer)
    return [_name(leg, leg.c[number], owner).label(f"{number}_name") for number in NAMED_NUMBERS]


def _name(leg: Table, number: ColumnElement[str], owner: ColumnElement[int]) -> ColumnElement:
    directory = tables.DirectoryEntry.__table__
    path = tables.CustomerTree.__table__
    line = tables.Line.__table__
    nearest = (
        select(directory.c.name)
        .join(path, path.c.ancestor_id == directory.c.customer_id)
        .where(path.c.descendant_id == owner, directory.c.number == number)
        .order_by(path.c.depth)
        .limit(1)
        .correlate(leg)
        .scalar_subquery()
    )
    everyone = (
        select(directory.c.name)
        .where(directory.c.customer_id.is_(None), directory.c.number == number)
        .order_by(directory.c.id)
        .limit(1)
        .correlate(leg)
        .scalar_subquery()
    )
    # Only lines of the leg's own customers, the owner's first (a line never belongs to 0):
    # extension numbers repeat across tenants, and another tenant's line name must not leak.
    line_names = [
        select(line.c.name)
        .where(line.c.number == number, line.c.customer_id == customer)
        .order_by(line.c.endpoint)
        .limit(1)
        .correlate(leg)
        .scalar_subquery()
        for customer in (leg.c.scustomer, leg.c.dcustomer)
    ]
    return case((number == "", literal("")),
                else_=func.coalesce(nearest, everyone, *line_names, literal("")))
