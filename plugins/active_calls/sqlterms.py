"""The SQL terms calls/active/list is built from that SQLAlchemy has no name for: a leg's row
as JSON text made by the database, and text ordered alike on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Integer,
    String,
    literal_column,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from pbxcontrol.plugin import tables

leg = tables.legs


class row_json(FunctionElement):  # noqa: N801 (an SQL function)
    """A leg as one JSON object text, built by the database: serialising rows in Python
    cost more than running the query. Arguments alternate key, value."""

    type = String()
    inherit_cache = True


@compiles(row_json)
def _row_json(element, compiler, **kw):  # SQLite's JSON1 (built in since 3.38)
    return f"json_object({compiler.process(element.clauses, **kw)})"


@compiles(row_json, "postgresql")
def _row_json_pg(element, compiler, **kw):
    """Text (the driver does not parse it back) joined from the fields, each string through
    to_json: json_build_object, which works out how to write each argument's type again on
    every row, cost 2.5 times as much (PostgreSQL 15, 29 fields)."""
    clauses = list(element.clauses)
    parts = []
    for i in range(0, len(clauses), 2):
        key, value = compiler.process(clauses[i], **kw).strip("'"), clauses[i + 1]
        sql = compiler.process(value, **kw)
        text = sql if isinstance(value.type, Integer) else f"to_json({sql})"
        parts.append(f"'{',' if i else '{'}\"{key}\":' || CAST({text} AS TEXT)")
    return "(" + " || ".join(parts) + " || '}')"


def check_json_support(conn: Connection) -> None:
    """At start-up, not at the first request: the rows need the database's JSON functions."""
    try:
        conn.execute(select(row_json(literal_column("'a'"), 1))).scalar_one()
    except Exception as exc:
        version = conn.dialect.server_version_info or ()
        raise ValueError(
            f"the database ({conn.dialect.name} {'.'.join(map(str, version))}) has no JSON "
            "functions: SQLite needs 3.38+ or a build with JSON1"
        ) from exc


def row_json_of_leg(source: FromClause = leg) -> row_json:
    """The row of a leg of `source` (the live table, or any selectable with its columns)."""
    pairs: list[ColumnElement[Any]] = []
    for name in tables.leg_fields:  # the API's field order; names are trusted constants
        pairs += [literal_column(f"'{name}'"), shown(name, source.c[name])]
    return row_json(*pairs)


def shown(name: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """What a row holds for a field: the column, but "" for `monitor`, which is per viewer
    (SPEC §11.8): monitored.py shows it to whom may see it, after the fact, so that a row
    kept or cached for many viewers never holds it."""
    if name == "monitor":
        return literal_column("CAST('' AS VARCHAR(8))", String)
    return column


class text_order(FunctionElement):  # noqa: N801 (an ORDER BY term)
    """A text column ordered by code point on every engine: SQLite's BINARY collation does,
    PostgreSQL's default follows the cluster's locale (COLLATE "C" there); the in-memory view
    (view.py) sorts Python strings, which compare by code point too."""

    inherit_cache = True


@compiles(text_order)
def _text_order(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(text_order, "postgresql")
def _text_order_pg(element, compiler, **kw):
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


def ordered(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return text_order(column) if isinstance(column.type, String) else column
