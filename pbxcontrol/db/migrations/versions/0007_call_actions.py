"""call actions: the audit trail of calls/hangup, and the `actions` privilege

Every call-control request by a person with `actions` leaves a row (who, from which address,
when, what, the legs, the outcome); the per-person rate limit counts the same rows. The
built-in roles `system owner`, `reseller` and `administrator` get `actions` (SPEC §5) unless
they already have it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROLES = ("system owner", "reseller", "administrator")


def upgrade() -> None:
    op.create_table(
        "call_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("callid", sa.String(length=255), server_default="", nullable=False),
        sa.Column("uniqueid", sa.String(length=255), server_default="", nullable=False),
        sa.Column("machine", sa.Integer(), server_default="0", nullable=False),
        sa.Column("legs", sa.Text(), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_actions")),
    )
    op.create_index("ix_call_actions_username_at", "call_actions", ["username", "at"])
    # Only roles that exist (all built-in ones do, unless an operator removed one by hand).
    for role in ROLES:
        op.execute(
            sa.text(
                "INSERT INTO role_privileges (role, privilege) "
                "SELECT name, 'actions' FROM roles WHERE name = :role AND NOT EXISTS "
                "(SELECT 1 FROM role_privileges WHERE role = :role AND privilege = 'actions')"
            ).bindparams(role=role)
        )


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM role_privileges WHERE privilege = 'actions' AND role IN :roles")
        .bindparams(sa.bindparam("roles", expanding=True))
        .bindparams(roles=list(ROLES))
    )
    op.drop_index("ix_call_actions_username_at", table_name="call_actions")
    op.drop_table("call_actions")
