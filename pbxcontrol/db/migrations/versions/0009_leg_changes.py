"""leg_changes: the change journal that live streams read (pbxcontrol.db.journal)

One row per leg change, written by the recorder in the transaction that changes the leg, and
a `reset` row for writes that may change every answer (customer tree, directory, lines). Two
counter rows: `journal` (the last id handed out) and `journal_pruned` (every id up to it has
been pruned).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leg_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("machine", sa.Integer(), nullable=False),
        sa.Column("uniqueid", sa.String(length=150), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("old_scustomer", sa.Integer(), nullable=True),
        sa.Column("old_dcustomer", sa.Integer(), nullable=True),
        sa.Column("new_scustomer", sa.Integer(), nullable=True),
        sa.Column("new_dcustomer", sa.Integer(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leg_changes")),
    )
    op.create_index("ix_leg_changes_at", "leg_changes", ["at"])
    op.execute("INSERT INTO counters (name, value) VALUES ('journal', 0), ('journal_pruned', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE name IN ('journal', 'journal_pruned')")
    op.drop_index("ix_leg_changes_at", table_name="leg_changes")
    op.drop_table("leg_changes")
