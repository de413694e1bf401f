"""Alembic migrations of the pbxcontrol schema."""
