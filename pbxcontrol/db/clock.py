"""The database's clock: one time for every host that shares the database (leases, ages)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, func


def db_now(dialect: str) -> ColumnElement[Any]:
    """The database's current time as Unix seconds (with fractions)."""
    if dialect == "postgresql":
        # clock_timestamp(), not now(): now() is the start of a transaction that may have
        # waited for the row lock.
        return func.extract("epoch", func.clock_timestamp()).cast(Float)
    return (func.julianday("now") - 2440587.5) * 86400.0
