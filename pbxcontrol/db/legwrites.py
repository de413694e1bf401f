"""PostgreSQL: a recorder's batch of leg writes as one statement per kind — the new legs, the
changed ones, the ended ones' history, the ended ones gone — each taking its rows as one JSON
document (`jsonb_populate_recordset`) made before the transaction begins.

The journal's entries ride with the lease's fence in the first statement (`record_fenced`).

Why not `executemany`: psycopg runs it as one statement per row, so a batch of 3,000 changed
legs converted 3,000 rows of parameters in Python while its transaction was open (the fleet's
busiest backends sat "idle in transaction" waiting for that), and fired the tables' statement
triggers once per row. Here the transaction sends four statements whose parameters are ready.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import orjson
from sqlalchemy import Connection, TextClause, text

KEY = ("machine", "uniqueid")

DELETE = text("DELETE FROM legs WHERE machine = :machine AND uniqueid = ANY(:uids)")

# The fence first (MATERIALIZED: evaluated, and its row locked, before anything is appended),
# then the entries, once, for the row it found.
FENCED_APPEND = text(
    "WITH fence AS MATERIALIZED ("
    "SELECT set_config('idle_in_transaction_session_timeout', :f_idle, true),"
    " set_config('lock_timeout', :f_wait, true)"
    " FROM machines WHERE id = :f_machine AND epoch = :f_epoch FOR KEY SHARE) "
    "SELECT pbx_journal_append(:m, :uids, :ops, :old_s, :old_d, :new_s, :new_d, :look_up, :at) "
    "FROM fence"
)


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


@functools.lru_cache(maxsize=16)
def insert(table: str, columns: tuple[str, ...]) -> TextClause:
    """INSERT of rows with these columns (the others take their defaults)."""
    names = _quoted(columns)
    return text(
        f"INSERT INTO {table} ({names}) SELECT {names} "
        f"FROM jsonb_populate_recordset(NULL::{table}, CAST(:rows AS jsonb))"
    )


@functools.lru_cache(maxsize=16)
def update(columns: tuple[str, ...]) -> TextClause:
    """UPDATE of live legs, found by their key, to rows with these columns."""
    sets = ", ".join(f'"{c}" = r."{c}"' for c in columns if c not in KEY)
    return text(
        f"UPDATE legs AS l SET {sets} "
        "FROM jsonb_populate_recordset(NULL::legs, CAST(:rows AS jsonb)) AS r "
        "WHERE l.machine = r.machine AND l.uniqueid = r.uniqueid"
    )


def rows(found: list[dict[str, Any]]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The columns of `found` (every row has the first one's) and the statement's parameters."""
    # OPT_NON_STR_KEYS: a key may be a str subclass (SQLAlchemy's quoted_name, from a row).
    return tuple(found[0]), {"rows": orjson.dumps(found, option=orjson.OPT_NON_STR_KEYS).decode()}


def record_fenced(conn: Connection, entries: dict[str, Any], fence: dict[str, Any]) -> bool:
    """The journal's entries (`journal.legs_entries`) behind the lease's fence
    (pbxcontrol/recorder/lease.py `FENCE_POSTGRESQL`, its parameters `fence`) in one
    statement: the first of a recorder's transaction, one round trip fewer. False when the
    fence found the lease gone: nothing was appended (the caller rolls back)."""
    return conn.execute(FENCED_APPEND, {**entries, **fence, "at": time.time()}).first() is not None
