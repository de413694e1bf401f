"""tokens: key ids with their age, revoked tokens, one-use stream tickets (SPEC §13)

Additive: `token_keys` gets `created` (the existing key is NULL: older than any rotation), and
two new tables. `revoked_tokens` holds the `jti` of each token ended by `user/logout` until it
would have expired; `stream_tickets` the digests of the one-use tickets that open a stream.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None
#: Older releases keep working on this schema (pbxcontrol/db/migrate.py): new tables and a nullable
#: column older releases never read.
additive = True


def upgrade() -> None:
    op.add_column("token_keys", sa.Column("created", sa.Float(), nullable=True))
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=32), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index("ix_revoked_tokens_expires", "revoked_tokens", ["expires"])
    op.create_table(
        "stream_tickets",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("jti", sa.String(length=32), nullable=False),
        sa.Column("token_expires", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_stream_tickets")),
    )
    op.create_index("ix_stream_tickets_expires", "stream_tickets", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_stream_tickets_expires", table_name="stream_tickets")
    op.drop_table("stream_tickets")
    op.drop_index("ix_revoked_tokens_expires", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("token_keys") as batch:
        batch.drop_column("created")
