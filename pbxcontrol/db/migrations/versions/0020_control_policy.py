"""control policy: customers' call-control policy, lines' owner and machine (SPEC §11.7)

Additive. `customers` gain `monitor` (none|listen|whisper|barge), `monitor_announce` (0|1),
`record` (0|1) and `context` (the dialling context), each NULL = inherited from the parent (the
root's default applies at the top); `lines` gain `owner` (a username, "" = nobody: the `panel`
privilege acts on calls of the lines a person owns) and `machine` (NULL = the only machine:
where click-to-call rings the line). The built-in `system owner` role gets the new `monitor`
privilege (SPEC §11.1) unless it already has it. Older releases never read these columns and
write rows that leave them at their defaults.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None
additive = True

ROLE = "system owner"


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("monitor", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("monitor_announce", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("record", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("context", sa.String(length=79), nullable=True))
    with op.batch_alter_table("lines") as batch:
        batch.add_column(
            sa.Column("owner", sa.String(length=128), server_default="", nullable=False)
        )
        batch.add_column(sa.Column("machine", sa.Integer(), nullable=True))
    op.execute(
        sa.text(
            "INSERT INTO role_privileges (role, privilege) "
            "SELECT name, 'monitor' FROM roles WHERE name = :role AND NOT EXISTS "
            "(SELECT 1 FROM role_privileges WHERE role = :role AND privilege = 'monitor')"
        ).bindparams(role=ROLE)
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM role_privileges WHERE privilege = 'monitor'"))
    with op.batch_alter_table("lines") as batch:
        batch.drop_column("machine")
        batch.drop_column("owner")
    with op.batch_alter_table("customers") as batch:
        for name in ("context", "record", "monitor_announce", "monitor"):
            batch.drop_column(name)
