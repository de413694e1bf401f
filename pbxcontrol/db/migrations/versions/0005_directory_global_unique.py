"""one global directory entry per number (a partial unique index for NULL customers)

The (number, customer_id) unique constraint never conflicts when customer_id is NULL (NULL is
not equal to NULL), so global entries had no database-level key and bulk upserts
(INSERT … ON CONFLICT) could not target them. Duplicates already present are merged first,
keeping the oldest row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

GLOBAL = "customer_id IS NULL"


def upgrade() -> None:
    op.execute(
        "DELETE FROM directory WHERE customer_id IS NULL AND id NOT IN "
        "(SELECT min(id) FROM directory WHERE customer_id IS NULL GROUP BY number)"
    )
    op.create_index(
        "uq_directory_number_global",
        "directory",
        ["number"],
        unique=True,
        sqlite_where=sa.text(GLOBAL),
        postgresql_where=sa.text(GLOBAL),
    )


def downgrade() -> None:
    op.drop_index("uq_directory_number_global", table_name="directory")
