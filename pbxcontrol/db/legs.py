"""The leg tables, live and ended: their columns come from pbxcontrol/legfields.py LEG_TABLE."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text, UniqueConstraint

from pbxcontrol import legfields
from pbxcontrol.db.base import BIG_INT, Base

# The leg's fields are declared once, in pbxcontrol/legfields.py (with their ARI source and rule).
LEG_STRING_FIELDS, LEG_INT_FIELDS, LEG_FIELDS = (
    legfields.LEG_STRING_FIELDS,
    legfields.LEG_INT_FIELDS,
    legfields.LEG_FIELDS,
)


def _leg_columns() -> list[Column]:
    """Columns shared by live legs and their history, from legfields.py LEG_TABLE."""
    columns: list[Column] = []
    for f in legfields.LEG_TABLE:
        if f.name in ("machine", "uniqueid"):  # a leg's key: never defaulted
            kind = Integer() if f.type is int else String(f.width)
            columns.append(Column(f.name, kind, nullable=False))
        elif f.type is int:
            columns.append(Column(f.name, Integer, nullable=False, default=0, server_default="0"))
        else:
            kind = Text() if f.width < 0 else String(f.width)
            columns.append(Column(f.name, kind, nullable=False, default="", server_default=""))
    # The lease's verdict on the leg (legfields.RECORDED; migration 0014), not the recorder's.
    columns.append(
        Column(legfields.RECORDED, Integer, nullable=False, default=1, server_default="1")
    )
    return columns


LEGS_TABLE = Table(
    "legs",
    Base.metadata,
    Column("id", BIG_INT, primary_key=True),
    *_leg_columns(),
    UniqueConstraint("machine", "uniqueid"),
    Index("ix_legs_scustomer_start", "scustomer", "start"),
    Index("ix_legs_dcustomer_start", "dcustomer", "start"),
    Index("ix_legs_callid", "callid"),
    Index("ix_legs_start_uniqueid", "start", "uniqueid"),
)
LEG_HISTORY_TABLE = Table(
    "leg_history",
    Base.metadata,
    Column("id", BIG_INT, primary_key=True),
    *_leg_columns(),
    Column("ended", Float, nullable=False, default=0.0),
    Column("cause", Integer, nullable=False, default=0, server_default="0"),
    Column("cause_txt", String(128), nullable=False, default="", server_default=""),
    Index("ix_leg_history_machine_uniqueid", "machine", "uniqueid"),
    Index("ix_leg_history_machine_ended", "machine", "ended"),
)


class ActiveLeg(Base):
    """A row of the active list: a live call leg (an Asterisk channel). Ended legs move to
    LegHistory."""

    __table__ = LEGS_TABLE


class LegHistory(Base):
    """Ended legs, kept for reference; the active list never reads this table."""

    __table__ = LEG_HISTORY_TABLE


Leg = ActiveLeg  # the name plugins and their tests know the table by
