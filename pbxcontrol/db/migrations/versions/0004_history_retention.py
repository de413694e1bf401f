"""index for pruning the leg history by age ([recorder] history_days)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_leg_history_machine_ended", "leg_history", ["machine", "ended"])


def downgrade() -> None:
    op.drop_index("ix_leg_history_machine_ended", table_name="leg_history")
