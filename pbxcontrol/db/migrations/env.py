"""Alembic environment: runs on the connection handed over by pbxcontrol.db.migrate."""

from alembic import context

from pbxcontrol.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    # pbxcontrol.db.migrate: alembic_version holds the compatibility floor since 0014.
    version_table=context.config.attributes["version_table"],
)
with context.begin_transaction():
    context.run_migrations()
