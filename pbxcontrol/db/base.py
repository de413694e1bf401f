"""What every table shares: the declarative base with its naming convention, and column
shorthands."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _s(length: int = 255) -> Mapped[str]:
    return mapped_column(String(length), nullable=False, default="", server_default="")


def _i() -> Mapped[int]:
    return mapped_column(Integer, nullable=False, default=0, server_default="0")


def _f() -> Mapped[float]:
    return mapped_column(Float, nullable=False, default=0.0, server_default="0")


#: 64 bits for what grows without bound (counters, ids of every leg ever recorded): BIGINT on
#: PostgreSQL, whose INTEGER holds 32 (migration 0010); INTEGER on SQLite, where it already holds
#: 64 and where only an INTEGER PRIMARY KEY is the rowid.
BIG_INT = BigInteger().with_variant(Integer(), "sqlite")
