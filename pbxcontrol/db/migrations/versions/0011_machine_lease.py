"""machine lease: epoch and renewed_at, for standby recorders (SPEC §10)

`holder` (0006) names the process allowed to record the machine, `epoch` is the fencing token
(+1 at each takeover, checked by every write of the holder in the same transaction) and
`renewed_at` the database's clock at the holder's last renewal. 0 = never renewed: a row from
before this revision is free to take.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "machines", sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "machines", sa.Column("renewed_at", sa.Float(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("renewed_at")
        batch.drop_column("epoch")
