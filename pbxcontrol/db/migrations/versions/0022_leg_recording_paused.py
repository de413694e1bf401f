"""legs.recording_paused: 1 while our recording of the leg is paused (SPEC §11.8)

Additive. `legs.recording_paused` (and `leg_history.recording_paused`, the value the leg
ended with), 0 by default: rows older releases write are not paused.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): a column with a
#: server default.
additive = True


def upgrade() -> None:
    for table in ("legs", "leg_history"):
        op.add_column(
            table,
            sa.Column("recording_paused", sa.Integer(), nullable=False, server_default="0"),
        )


def downgrade() -> None:
    for table in ("leg_history", "legs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("recording_paused")
