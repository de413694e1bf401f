"""The journal's probe counts only this database's writers

PostgreSQL only. `pbx_journal_probe` (migration 0016) read the journal writers' advisory locks
from `pg_locks` without naming the database, and `pg_locks` shows every database of the server:
two pbxcontrol databases on one PostgreSQL (staging beside production, an installation per
reseller, the test suite's parallel workers) each waited for the other's writers before their
journal's head moved (pbxcontrol/db/horizon.py). Never a wrong head, but a late one: a fresh
reader could see no entry at all while the other database was busy. Now only the locks held in
the current database count.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): the same function,
#: the same answer for a database alone on its server.
additive = True

#: The advisory lock class of a transaction that appends to the journal (migration 0016).
JOURNAL_CLASS = 727021


def _probe(same_database: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION pbx_journal_probe(
    OUT last bigint, OUT writers text[], OUT counted bigint, OUT pruned bigint
) LANGUAGE plpgsql AS $$
BEGIN
    -- The sequence first, then who is writing: the order the horizon's argument needs.
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO last
    FROM leg_changes_ids;
    SELECT array_agg(virtualtransaction) INTO writers FROM pg_locks
    WHERE locktype = 'advisory' AND classid = {JOURNAL_CLASS} AND objsubid = 2{same_database};
    SELECT value INTO counted FROM counters WHERE name = 'api_data';
    SELECT value INTO pruned FROM counters WHERE name = 'journal_pruned';
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        here = " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        op.execute(_probe(here))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_probe(""))
