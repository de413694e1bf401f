"""change counter for response caching, kept by triggers

The core's data version (pbxcontrol.db.dataversion, exported to plugins through
pbxcontrol.plugin): what bumps it and what it guarantees is documented there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: Tables whose changes alter what the API can answer (the data version's scope).
WATCHED = ("legs", "customer_tree", "directory", "lines")
BUMP = "UPDATE counters SET value = value + 1 WHERE name = 'api_data'"


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    op.execute("INSERT INTO counters (name, value) VALUES ('api_data', 0)")
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION pbx_bump_api_data() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
    for table in WATCHED:
        for action in ("INSERT", "UPDATE", "DELETE"):
            name = f"trg_{table}_{action.lower()}_bump"
            if dialect == "postgresql":
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {action} ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION pbx_bump_api_data()"
                )
            else:
                op.execute(f"CREATE TRIGGER {name} AFTER {action} ON {table} BEGIN {BUMP}; END")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in WATCHED:
        for action in ("insert", "update", "delete"):
            suffix = f" ON {table}" if dialect == "postgresql" else ""
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_{action}_bump{suffix}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS pbx_bump_api_data()")
    op.drop_table("counters")
