"""call_intents: call-control actions carried out by the recording process (SPEC §11.2)

Additive. One row per (request, machine): what the API asks the holder of the machine's lease
to do (`function`, `targets`, `params`), its `state` (pending, claimed, done, refused, expired,
unknown), the `deadline` by the database's clock, the lease `epoch` that claimed it, and the
outcome (`code`, `message`, `legs`, `created`). `action_id` names the request's audit row in
`call_actions`, written first (code 0 until the answer is known). Index (machine, state): the
holder looks for its pending intents.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): a table they never
#: read.
additive = True


def upgrade() -> None:
    op.create_table(
        "call_intents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("machine", sa.Integer(), nullable=False),
        sa.Column("function", sa.String(length=32), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("code", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("legs", sa.Text(), server_default="[]", nullable=False),
        sa.Column("created", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_intents")),
    )
    op.create_index("ix_call_intents_machine_state", "call_intents", ["machine", "state"])
    op.create_index("ix_call_intents_action_id", "call_intents", ["action_id"])
    op.create_index("ix_call_intents_at", "call_intents", ["at"])


def downgrade() -> None:
    for name in ("at", "action_id", "machine_state"):
        op.drop_index(f"ix_call_intents_{name}", table_name="call_intents")
    op.drop_table("call_intents")
