"""the leg history's duration class and the indexes that answer "live at t" (SPEC §14)

Additive: one column computed by the database and three indexes on `leg_history`. `span` is
the leg's duration class (db/legs.py HISTORY_SPANS: under 1, 4, 16, 64 minutes ... 182 days,
or longer); per class, the legs live at t are one bounded range of starts (the class's limit
before t up to t) on (customer, span, start, ended), for a customer as source or destination,
or for the whole system. SQLite computes the column when read (VIRTUAL: adding it rewrites
nothing; its indexes hold the values); PostgreSQL stores it (STORED is all it has before 18:
adding it rewrites the table once, under an exclusive lock, like the index builds).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): a column the database
#: computes and indexes: older releases' inserts name their columns.
additive = True

# As written at this revision (db/legs.py HISTORY_SPAN_SQL builds the same text).
LIMITS = [60 * 4**k for k in range(10)]
SPAN = (
    "CASE "
    + " ".join(f"WHEN ended - start < {limit} THEN {k}" for k, limit in enumerate(LIMITS))
    + f" ELSE {len(LIMITS)} END"
)
INDEXES = {
    "ix_leg_history_scustomer_span": ["scustomer", "span", "start", "ended"],
    "ix_leg_history_dcustomer_span": ["dcustomer", "span", "start", "ended"],
    "ix_leg_history_span": ["span", "start", "ended"],
}


def upgrade() -> None:
    # SQLite adds only VIRTUAL generated columns to a table; PostgreSQL indexes only STORED ones.
    stored = True if op.get_bind().dialect.name == "postgresql" else None
    span = sa.Column("span", sa.Integer, sa.Computed(SPAN, persisted=stored), nullable=False)
    op.add_column("leg_history", span)
    for name, columns in INDEXES.items():
        op.create_index(name, "leg_history", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="leg_history")
    op.drop_column("leg_history", "span")
