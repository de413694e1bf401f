"""machine metrics: the holder's counters for GET /metrics (SPEC §10)

Written with each heartbeat by the machine's holder, so one scrape of any API process shows
the whole fleet: ARI websocket reconnections, reconciles with GET /channels and the legs they
corrected (added or ended), and the recorder's lag (the longest time from reading an event
off the websocket to committing it, over the last heartbeat interval). The counters restart
at 0 with each holder, as Prometheus counters may.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (
    ("reconnects", sa.BigInteger(), "0"),
    ("reconciles", sa.BigInteger(), "0"),
    ("corrections", sa.BigInteger(), "0"),
    ("lag_seconds", sa.Float(), "0"),
)


def upgrade() -> None:
    for name, type_, default in COLUMNS:
        op.add_column("machines", sa.Column(name, type_, nullable=False, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        for name, _type, _default in reversed(COLUMNS):
            batch.drop_column(name)
