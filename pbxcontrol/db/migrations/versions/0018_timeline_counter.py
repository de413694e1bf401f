"""timeline counter: the PostgreSQL timeline the counters were last moved on from

The row `timeline` of `counters` (0 until the first connection reads the server's timeline):
after a failover the first connection to the promoted standby finds a new timeline and moves
the change journal (and with it the data version) on past anything the old primary may have
handed out (pbxcontrol/db/failover.py). Unused on SQLite.

Additive: a row older releases never read.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py).
additive = True


def upgrade() -> None:
    op.execute("INSERT INTO counters (name, value) VALUES ('timeline', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE name = 'timeline'")
