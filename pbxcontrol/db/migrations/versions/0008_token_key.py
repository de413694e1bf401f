"""tokens: the installation's signing key, and a revocation marker per person

The key is made here, in the transaction that creates the table, so every way the schema
comes to this revision (`pbxcontrol initdb`, or an API process creating an empty database)
leaves one behind; `initdb` also makes a new one if the row was deleted (key rotation).
Existing people get the marker "" (no token was issued before this revision).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import secrets

import sqlalchemy as sa
from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "people",
        sa.Column("token_epoch", sa.String(length=32), server_default="", nullable=False),
    )
    keys = op.create_table(
        "token_keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_keys")),
    )
    # Not in generated SQL scripts (offline mode): a key must not end up in a file; initdb
    # makes it then.
    if not context.is_offline_mode():
        op.bulk_insert(keys, [{"id": 1, "secret": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("token_keys")
    with op.batch_alter_table("people") as batch:
        batch.drop_column("token_epoch")
