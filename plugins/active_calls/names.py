"""Number names (names=1): nearest customer's directory entry, then global, then a line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    CTE,
    ColumnElement,
    CompoundSelect,
    Connection,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    literal,
    null,
    or_,
    select,
    union_all,
)

from pbxcontrol.plugin import tables

tree, directory, leg, line = tables.customer_tree, tables.directory, tables.legs, tables.lines
NAMED_NUMBERS = ("snumber", "cnumber", "dnumber")
DIRECTORY, LINE = 0, 1  # the kinds of candidate


@dataclass(frozen=True)
class NameStatements:
    """One statement over the same legs as the listing: the directory entries that can name
    one of their numbers (kind 0) and the telephone lines that can (kind 1), as
    (kind, owner or customer, number, depth, entry id, endpoint, name)."""

    candidates: CompoundSelect


def statements(
    conditions: Sequence[ColumnElement[bool]], source: FromClause = leg
) -> NameStatements:
    """Candidate names for every number of the legs of `source` (the live table, or the legs
    of a past moment) matching `conditions`, fetched set-wise: one index probe per number
    instead of a dozen correlated subqueries per row."""
    # The leg's owner: the customer billed for it, else the one it was routed to.
    owner = case((source.c.scustomer != 0, source.c.scustomer), else_=source.c.dcustomer)
    page = (
        select(
            owner.label("owner"),
            source.c.scustomer,
            source.c.dcustomer,
            *(source.c[n] for n in NAMED_NUMBERS),
        )
        .where(*conditions)
        .cte("page")
    )
    # UNION ALL, not UNION: numbers rarely repeat within a listing, and de-duplicating costs
    # more than the extra probes it saves.
    wanted = union_all(
        *(
            select(page.c.owner, page.c[n].label("number")).where(page.c[n] != "")
            for n in NAMED_NUMBERS
        )
    ).cte("wanted")
    # One probe of the (number, customer_id) index per number finds the global entry and
    # every customer's; the tree's primary key keeps those on the owner's path to the root.
    on_path = and_(
        tree.c.ancestor_id == directory.c.customer_id, tree.c.descendant_id == wanted.c.owner
    )
    entries = (
        select(
            literal(DIRECTORY, Integer).label("kind"),
            wanted.c.owner,
            wanted.c.number,
            tree.c.depth,
            directory.c.id,
            cast(null(), String).label("endpoint"),
            directory.c.name,
        )
        .select_from(
            wanted.join(directory, directory.c.number == wanted.c.number).outerjoin(tree, on_path)
        )
        .where(or_(directory.c.customer_id.is_(None), tree.c.depth.is_not(None)))
    )
    # One statement, not two: on a catch-up of a few legs each statement's fixed cost counts.
    return NameStatements(union_all(entries, _lines(page, wanted)))


def _lines(page: CTE, wanted: CTE) -> Select:
    """The telephone lines of the legs' customers with one of the wanted numbers."""
    customers = union_all(select(page.c.scustomer.label("customer")), select(page.c.dcustomer))
    return select(
        literal(LINE, Integer),
        line.c.customer_id,
        line.c.number,
        cast(null(), Integer),
        cast(null(), Integer),
        line.c.endpoint,
        line.c.name,
    ).where(line.c.number.in_(select(wanted.c.number)), line.c.customer_id.in_(customers))


class NameBook:
    """The candidates of one listing, indexed by number: naming a number nobody names (most
    external ones) is one lookup; the names are kept as JSON text, ready for the row."""

    def __init__(self, conn: Connection, found: NameStatements, values: dict[str, Any]):
        nearest: dict[tuple[int, str], tuple[int, str]] = {}  # (owner, number) -> depth, name
        everyone: dict[str, tuple[int, str]] = {}  # number -> (id, global entry's name)
        lines: dict[tuple[int, str], tuple[str, str]] = {}  # (customer, number) -> endpoint, name
        for kind, who, number, depth, entry_id, endpoint, name in conn.execute(
            found.candidates, values
        ):
            if kind == LINE:  # `who` is the line's customer
                if (who, number) not in lines or endpoint < lines[(who, number)][0]:
                    lines[(who, number)] = (endpoint, name)
            elif depth is None:  # a global entry: the lowest id wins
                if number not in everyone or entry_id < everyone[number][0]:
                    everyone[number] = (entry_id, name)
            elif (who, number) not in nearest or depth < nearest[(who, number)][0]:
                nearest[(who, number)] = (depth, name)  # `who` is the leg's owner
        # number -> (owner -> name, the global name or None, line's customer -> name)
        self.numbers: dict[str, tuple[dict[int, str], str | None, dict[int, str]]] = {}
        for number in {n for _, n in nearest} | set(everyone) | {n for _, n in lines}:
            self.numbers[number] = ({}, None, {})
        for (owner, number), (_, name) in nearest.items():
            self.numbers[number][0][owner] = _json(name)
        for number, (_, name) in everyone.items():
            owners, _, by_line = self.numbers[number]
            self.numbers[number] = (owners, _json(name), by_line)
        for (customer, number), (_, name) in lines.items():
            self.numbers[number][2][customer] = _json(name)

    def name(self, owner: int, scustomer: int, dcustomer: int, number: str) -> str:
        """The number's name as JSON text ("" when none)."""
        entry = self.numbers.get(number) if number else None
        if entry is None:
            return '""'
        owners, everyone, lines = entry
        # A name may be "" and still win: only a missing entry falls through to the next rule.
        found = owners.get(owner)
        if found is None:
            found = everyone
        if found is None:
            found = lines.get(scustomer)
        if found is None:
            found = lines.get(dcustomer, '""')
        return found


def _json(name: str) -> str:
    return orjson.dumps(name).decode()


def named(
    book: NameBook,
    obj: str,
    scustomer: int,
    dcustomer: int,
    snumber: str,
    cnumber: str,
    dnumber: str,
) -> str:
    """The row's JSON object with the three names added at its end."""
    owner = scustomer or dcustomer
    name = book.name
    return (
        f'{obj[:-1]},"snumber_name":{name(owner, scustomer, dcustomer, snumber)},'
        f'"cnumber_name":{name(owner, scustomer, dcustomer, cnumber)},'
        f'"dnumber_name":{name(owner, scustomer, dcustomer, dnumber)}}}'
    )
