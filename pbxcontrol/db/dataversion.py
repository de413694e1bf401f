"""The data version: one number that changes whenever what the API can answer changes.

What bumps it: database triggers (migration 0002) add 1 to the row `api_data` of the table
`counters` after every INSERT, UPDATE or DELETE on `legs`, `customer_tree`, `directory` and
`lines` (on PostgreSQL once per transaction, migration 0013: psycopg runs an executemany as
one statement per row, so statement triggers alone bumped once per row; on SQLite once per
row, it has no statement triggers), in the same transaction as the change. Triggers, not application
code, so every writer counts: the recorder, provisioning, another API process or host on the
same database, an operator's `psql`.

What it guarantees:

- it never decreases, and every committed change to those tables leaves it larger than any
  value read before the change committed;
- read *before* the data in one request, an answer computed from that data is at least as new
  as the version read, so an answer stored under version V may be served to anyone asking
  while the version is still V (it is never stale);
- it is one counter for the whole database: values are comparable across processes and hosts.

What it does not cover: `people`, `roles`, `customers` (names, `max_calls`), `numbers`,
`peers`. An answer that depends on those must not be cached by this version alone.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from pbxcontrol.db.models import Counter

#: The row of `counters` the triggers maintain.
API_DATA = "api_data"

_VERSION = select(Counter.value).where(Counter.name == API_DATA)


def data_version(conn: Connection) -> int | None:
    """The current data version, or None on a database without the counter row."""
    return conn.execute(_VERSION).scalar()
