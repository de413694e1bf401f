"""The data version: one number that changes whenever what the API can answer changes.

What bumps it: database triggers (migration 0002) add 1 to the row `api_data` of the table
`counters` after every INSERT, UPDATE or DELETE on `legs`, `customer_tree`, `directory` and
`lines` (on PostgreSQL once per transaction, migration 0013: psycopg runs an executemany as
one statement per row, so statement triggers alone bumped once per row; on SQLite once per
row, it has no statement triggers), in the same transaction as the change. Triggers, not application
code, so every writer counts: the recorder, provisioning, another API process or host on the
same database, an operator's `psql`.

On PostgreSQL that row would be the one every recorder transaction updates, its lock held from
the first leg written to the commit: fifty machines queued on it (issue 21). There the version
is the change journal's head (pbxcontrol/db/journal.py, its commit-ordered horizon) plus the
counter: a transaction that journals its leg changes (`pbx_journal_append` sets
`pbxcontrol.journalled`) moves the head and leaves the row alone (migration 0016); every other
write to the four tables (provisioning, an operator's `psql`) bumps the row as before. Both
parts only grow, so their sum only grows, and it grows with every committed change once the
head has passed it (the head is where readers look: the journal's entries up to it).

What it guarantees:

- it never decreases, and every committed change to those tables leaves it larger than any
  value read before the change committed;
- read *before* the data in one request, an answer computed from that data is at least as new
  as the version read, so an answer stored under version V may be served to anyone asking
  while the version is still V (it is never stale);
- it is one number for the whole database: values are comparable across processes and hosts.

What it does not cover: `people`, `roles`, `customers` (names, `max_calls`), `numbers`,
`peers`. An answer that depends on those must not be cached by this version alone.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from pbxcontrol.db.models import Counter

#: The row of `counters` the triggers maintain.
API_DATA = "api_data"

_VERSION = select(Counter.value).where(Counter.name == API_DATA)


def data_version(conn: Connection) -> int | None:
    """The current data version, or None on a database without the counter row."""
    if conn.dialect.name == "postgresql":
        from pbxcontrol.db import journal  # (journal reads this module's counter too)

        return journal.position(conn).version
    return counted(conn)


def counted(conn: Connection) -> int | None:
    """The triggers' counter alone: what moved it in this transaction was a write to the
    watched tables without a journal entry (provisioning compares it before and after)."""
    return conn.execute(_VERSION).scalar()


def bump(conn: Connection) -> None:
    """Move the version for a write no trigger watches that changes answers all the same (a
    customer's `monitor_announce`: who sees the list's `monitor` field, SPEC §11.8)."""
    conn.execute(update(Counter).where(Counter.name == API_DATA).values(value=Counter.value + 1))
