"""The board at a past moment (SPEC §14): which legs were live at `at`, and as what.

A leg was live at `at` when it started at or before it and ended after it, or has not ended:
from the live table (`legs`), those started by then; from the history (`leg_history`), those
that also ended after it. The history is found without reading it whole: each ended leg has
a duration class (`span`, HISTORY_SPANS), and a leg of class k live at `at` started within
HISTORY_SPANS[k] seconds before it, so the candidates are one bounded range of starts per
class on the indexes (customer, span, start, ended) or, for the system view, (span, start,
ended) — about as many index entries as there were live legs then.

Each leg as it was then: `status` "Up" once answered; before its answer, the state it had
while ringing ("Ring" on the leg that placed the call, "Ringing" on a leg that was dialled)
and `answered` 0. Every other field as last recorded. The request's scope and filters apply
to both tables alike (shapes.py), then one order over both, as the live list orders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Float,
    FromClause,
    Integer,
    Subquery,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    select,
    text,
    union_all,
)

from pbxcontrol.plugin import tables

from .names import statements as name_statements
from .shapes import NAME_INPUTS, Shape, Statements, conditions, members
from .sqlterms import ordered, row_json, shown

history, live, HISTORY_SPANS = tables.leg_history, tables.legs, tables.history_spans
AT = bindparam("at", type_=Float)  # the moment, Unix time
AT_SECOND = bindparam("at_second", type_=Integer)  # its whole second (`start` holds those)


#: PostgreSQL, for the request's transaction (measured on 10 M ended legs, 2026-12-06):
#: - a plan made once per connection: planning the statement's two dozen index ranges took
#:   longer than running them (1.2-1.7 ms against 0.8 for a customer's board);
#: - no JIT: a generic plan's cost estimate passes jit_above_cost, and compiling took 1.26 s
#:   of a system view's 1.37;
#: - nested loops only: estimating the legs live then from the two tables, the planner
#:   guesses ten times too many and hashes the whole directory for their names (28 ms for a
#:   customer's board of 68 legs; 0.7 ms probing its index);
#: - no parallel workers, and room to sort a big board in memory (10,000 rows of JSON
#:   spilled to disk at the default 4 MB).
_TUNE = text(
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true), "
    "set_config('jit', 'off', true), "
    "set_config('enable_hashjoin', 'off', true), "
    "set_config('enable_mergejoin', 'off', true), "
    "set_config('max_parallel_workers_per_gather', '0', true), "
    "set_config('work_mem', '32MB', true)"
)


def tune(conn: Connection) -> None:
    """Before the statements of a past moment run on `conn` (see _TUNE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_TUNE)


def build(shape: Shape) -> Statements:
    """The statements of a request with `at` (values: query.statement)."""
    if shape.count:
        return Statements(select(func.count()).select_from(_board(shape, _keys)))
    board = _board(shape, _row)
    columns: list[ColumnElement[Any]] = [board.c.row]
    if shape.names:
        columns += [board.c[name] for name in NAME_INPUTS]
    if shape.keyed:
        columns = [board.c.machine, board.c.uniqueid, *columns]
    # As the live list orders (start, uniqueid), then what tells legs of both tables apart.
    order: list[ColumnElement[Any]] = [
        board.c.start,
        ordered(board.c.uniqueid),
        board.c.machine,
        board.c.id,
    ]
    if shape.sort != "start":
        order.insert(0, ordered(board.c[shape.sort]))
    if shape.descending:
        order = [column.desc() for column in order]
    listing = select(*columns).order_by(*order)
    # The names' own board: the numbers alone, not the rows made again.
    names = name_statements([], _board(shape, _numbers)) if shape.names else None
    return Statements(listing, names)


Columns = Callable[[FromClause, Shape], list[ColumnElement[Any]]]


def _board(shape: Shape, columns: Columns) -> Subquery:
    """The legs live at `at`, of both tables, as `columns` of each."""
    return union_all(
        # The keys hold the scope already; said again, it could lead a planner to read every
        # ended leg of the scope's customers.
        select(*columns(history, shape)).where(
            history.c.id.in_(_ended_keys(shape)), *conditions(replace(shape, scope=None), history)
        ),
        select(*columns(live, shape)).where(live.c.start <= AT_SECOND, *conditions(shape, live)),
    ).subquery("board")


def _keys(table: FromClause, shape: Shape) -> list[ColumnElement[Any]]:
    return [table.c.id]


def _numbers(table: FromClause, shape: Shape) -> list[ColumnElement[Any]]:
    return [table.c[name] for name in NAME_INPUTS]


def _row(table: FromClause, shape: Shape) -> list[ColumnElement[Any]]:
    """The row's JSON as it was at `at` (made in each table's select: made over the union,
    it cost a fifth more), and what orders and names it."""
    answered = table.c.answered
    up = and_(answered != 0, answered <= AT_SECOND)
    status = case(
        (answered == 0, table.c.status),  # never answered: as it was while it rang
        (up, literal("Up")),
        # Asterisk: a channel that places a call rings in state Ring, a dialled one Ringing.
        (table.c.dialled_by == "", literal("Ring")),
        else_=literal("Ringing"),
    )
    then = {"status": status, "answered": case((up, answered), else_=literal(0))}
    pairs: list[ColumnElement[Any]] = []
    for name in tables.leg_fields:  # the API's field order; names are trusted constants
        pairs += [literal_column(f"'{name}'"), then.get(name, shown(name, table.c[name]))]
    extra = {"start", "uniqueid", "machine", "id", shape.sort}
    if shape.names:
        extra |= set(NAME_INPUTS)
    return [row_json(*pairs).label("row"), *(table.c[name] for name in sorted(extra))]


def _ended_keys(shape: Shape) -> CompoundSelect:
    """Row ids of the ended legs in the scope that were live at `at`: per duration class,
    the range of starts such a leg can have (the last class is open: legs of 182 days and
    more, hardly any), for each customer column when the scope has customers."""
    columns: list[ColumnElement[Any] | None] = [None]
    customers: Any = None
    if shape.scope is not None:
        columns = [history.c.scustomer, history.c.dcustomer]
        customers = members(shape) if shape.scope[0] else bindparam("scope")
    ranges = []
    for span in range(len(HISTORY_SPANS) + 1):
        bounds = [history.c.span == span, history.c.start <= AT_SECOND, history.c.ended > AT]
        if span < len(HISTORY_SPANS):
            bounds.append(history.c.start > AT_SECOND - HISTORY_SPANS[span])
        for column in columns:
            mine = [] if column is None else [_of(column, customers, shape)]
            ranges.append(select(history.c.id).where(*mine, *bounds))
    return union_all(*ranges)


def _of(column: ColumnElement[Any], customers: Any, shape: Shape) -> ColumnElement[bool]:
    assert shape.scope is not None
    return column.in_(customers) if shape.scope[0] else column == customers
