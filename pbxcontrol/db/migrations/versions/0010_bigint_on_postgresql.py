"""64-bit counters and leg ids on PostgreSQL

SQLite's INTEGER holds 64 bits, PostgreSQL's 32. The data-version counter (0002) grows by one
per statement that writes legs, the journal counter (0009) by one per leg change, and the ids
of `legs` and `leg_history` by one per leg ever recorded: at a few hundred a second each passes
2**31 within months, and from then on every write of a leg failed on PostgreSQL with "integer
out of range" (found by the tests on PostgreSQL). Nothing changes on SQLite, where an INTEGER
PRIMARY KEY must stay INTEGER to remain the rowid.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: Serial ids that grow with every leg recorded.
LEG_IDS = ("legs", "leg_history")


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger(), "bigint")


def downgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer(), "integer")


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine, sequence_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.alter_column("counters", "value", type_=new, existing_type=old, existing_nullable=False)
    for table in LEG_IDS:
        op.alter_column(table, "id", type_=new, existing_type=old, existing_nullable=False)
        # A serial's sequence has its own type (and so its own maximum) since PostgreSQL 10.
        sequence = bind.execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
        op.execute(f"ALTER SEQUENCE {sequence.scalar_one()} AS {sequence_type}")
