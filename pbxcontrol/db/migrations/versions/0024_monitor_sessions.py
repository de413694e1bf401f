"""Monitoring sessions (SPEC §11.2 item 5, §11.8): legs.monitor, legs.spying, and the columns
call_controls lacked for them

Additive. `legs.monitor` (and `leg_history.monitor`): the strongest live monitoring session on
the leg (`listen`, `whisper`, `barge`; "" none), which the list shows only to viewers entitled
to it. `legs.spying` (bookkeeping, not in the API): on a supervisor's leg, `<mode>/<monitored
uniqueid>`, so a holder that takes over knows which leg to clear when it ends.
`call_controls.supervisor` (the supervisor's leg) and `call_controls.mode`: a session of kind
`monitor`. Every column "" by default: rows older releases write are not monitored.

Revision ID: 0024
Revises: 0022
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0022"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): columns with a
#: server default.
additive = True


def _text(name: str, width: int) -> sa.Column:
    return sa.Column(name, sa.String(length=width), nullable=False, server_default="")


def upgrade() -> None:
    for table in ("legs", "leg_history"):
        op.add_column(table, _text("monitor", 8))
        op.add_column(table, _text("spying", 160))
    op.add_column("call_controls", _text("supervisor", 150))
    op.add_column("call_controls", _text("mode", 8))


def downgrade() -> None:
    for table, columns in (
        ("call_controls", ("mode", "supervisor")),
        ("leg_history", ("spying", "monitor")),
        ("legs", ("spying", "monitor")),
    ):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column)
