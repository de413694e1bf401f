"""machine status: the recorder's heartbeat, for `pbxcontrol status`

Who records each machine (`holder`, host:pid), whether its ARI websocket is up, and when it
last wrote this row (`heartbeat_at`): a row whose heartbeat is old belongs to a recorder that
is not running. A later lease (holder + epoch, SPEC §10) grows from these columns.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
    ("holder", sa.String(length=255), ""),
    ("connected", sa.Boolean(), sa.false()),
    ("heartbeat_at", sa.Float(), "0"),
    ("last_event_at", sa.Float(), "0"),
    ("events_total", sa.BigInteger(), "0"),
    ("events_per_second", sa.Float(), "0"),
)


def upgrade() -> None:
    for name, type_, default in COLUMNS:
        op.add_column("machines", sa.Column(name, type_, nullable=False, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        for name, _type, _default in reversed(COLUMNS):
            batch.drop_column(name)
