"""The leg tables, live and ended: their columns come from pbxcontrol/legfields.py LEG_TABLE."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Computed,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
    # The lease's verdict on the leg (legfields.RECORDED; migration 0017), not the recorder's.
    columns.append(
        Column(legfields.RECORDED, Integer, nullable=False, default=1, server_default="1")
    )
    return columns


#: The duration classes of ended legs (SPEC §14, the board at a past moment): a leg that lasted
#: (ended - start) less than HISTORY_SPANS[k] seconds, and not less than the limit before, is of
#: class k; a longer one of class len(HISTORY_SPANS). A leg of class k that was live at t started
#: after t - HISTORY_SPANS[k], so "live at t" is one bounded range of starts per class on an
#: index (customer, span, start): it reads about as many entries as there were live legs then
#: (at most about 4 times as many: the limits grow fourfold), never the whole history.
HISTORY_SPANS = tuple(60 * 4**k for k in range(10))  # 1 minute .. 182 days
HISTORY_SPAN_SQL = (
    "CASE "
    + " ".join(f"WHEN ended - start < {limit} THEN {k}" for k, limit in enumerate(HISTORY_SPANS))
    + f" ELSE {len(HISTORY_SPANS)} END"
)

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
    # Computed by the database (migration 0015: VIRTUAL on SQLite, STORED on PostgreSQL, which
    # indexes no other kind): no writer can get it wrong or forget it.
    Column("span", Integer, Computed(HISTORY_SPAN_SQL), nullable=False),
    Index("ix_leg_history_machine_uniqueid", "machine", "uniqueid"),
    Index("ix_leg_history_machine_ended", "machine", "ended"),
    # Which legs were live at a moment: a customer's (as source or destination), the system's.
    Index("ix_leg_history_scustomer_span", "scustomer", "span", "start", "ended"),
    Index("ix_leg_history_dcustomer_span", "dcustomer", "span", "start", "ended"),
    Index("ix_leg_history_span", "span", "start", "ended"),
)


class ActiveLeg(Base):
    """A row of the active list: a live call leg (an Asterisk channel). Ended legs move to
    LegHistory."""

    __table__ = LEGS_TABLE


class LegHistory(Base):
    """Ended legs, kept for reference; the active list never reads this table."""

    __table__ = LEG_HISTORY_TABLE


Leg = ActiveLeg  # the name plugins and their tests know the table by
