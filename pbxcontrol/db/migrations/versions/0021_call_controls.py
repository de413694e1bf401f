"""call_controls: recording sessions the holder of a machine's lease runs (SPEC §11.2 item 5)

Additive. One row per session: `kind` (`record`), the target leg (`machine`, `uniqueid`), the
snoop channel the holder created, the recording's `name` and absolute `path`, its `state`
(`starting`, `recording`, `paused`, `ended`), the intent that started it and the lease `epoch`
that last wrote it. A new lease holder reconciles the rows not `ended` with Asterisk (the snoop
and its recording survive the websocket changing hands) and ends what is orphaned. Index
(machine, state): the holder looks for its sessions that still run.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): a table they never
#: read.
additive = True


def upgrade() -> None:
    op.create_table(
        "call_controls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("uniqueid", sa.String(length=150), nullable=False),
        sa.Column("snoop", sa.String(length=150), server_default="", nullable=False),
        sa.Column("name", sa.String(length=512), server_default="", nullable=False),
        sa.Column("path", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("intent_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_controls")),
    )
    op.create_index("ix_call_controls_machine_state", "call_controls", ["machine", "state"])


def downgrade() -> None:
    op.drop_index("ix_call_controls_machine_state", table_name="call_controls")
    op.drop_table("call_controls")
