"""legs.recorded and machines.recorded: legs of a machine nobody records (SPEC §12)

Additive. `legs.recorded` (and `leg_history.recorded`, the value the leg ended with) is 1
normally and 0 while its machine's lease has not been renewed for 2 x takeover_seconds;
`machines.recorded` says which of the two the machine's legs were last set to, so the process
that notices a change (pbxcontrol/db/unrecorded.py) writes it once. Existing rows default to
recorded.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): columns with server
#: defaults: rows older releases write are recorded.
additive = True


def upgrade() -> None:
    for table in ("legs", "leg_history"):
        op.add_column(
            table, sa.Column("recorded", sa.Integer(), nullable=False, server_default="1")
        )
    op.add_column(
        "machines", sa.Column("recorded", sa.Boolean(), nullable=False, server_default=sa.true())
    )


def downgrade() -> None:
    for table in ("machines", "leg_history", "legs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("recorded")
