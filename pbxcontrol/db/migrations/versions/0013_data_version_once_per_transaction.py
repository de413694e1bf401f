"""data version: one bump per transaction on PostgreSQL

The triggers of 0002 are FOR EACH STATEMENT on PostgreSQL, but psycopg runs an executemany
(the recorder's batch of leg writes) as one statement per row, so a batch of 200 changed legs
updated the counter row 200 times (measured: 300 row writes in one transaction, 12 ms with
the per-row bumps, 9.3 ms with one). One bump per transaction keeps the guarantee
(pbxcontrol/db/dataversion.py): the change and the larger version commit together. The
function remembers the bump in a transaction-local setting, which a rolled-back savepoint
undoes along with its UPDATE. SQLite keeps its row triggers (it has no statement triggers
and no per-transaction state to keep; its bump is a cheap in-process write).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BUMP = "UPDATE counters SET value = value + 1 WHERE name = 'api_data'"
ONCE = (
    "CREATE OR REPLACE FUNCTION pbx_bump_api_data() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF current_setting('pbxcontrol.api_data_bumped', true) IS DISTINCT FROM 'yes' THEN "
    f"{BUMP}; "
    "PERFORM set_config('pbxcontrol.api_data_bumped', 'yes', true); "
    "END IF; "
    "RETURN NULL; "
    "END $$"
)
EVERY = (
    "CREATE OR REPLACE FUNCTION pbx_bump_api_data() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ONCE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(EVERY)
