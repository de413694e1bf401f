"""LiveLeg: one live leg in the recorder's memory, and its row (fields per legfields.py);
Recorded: the holder's word on our recording of a leg (recorder/recording.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from pbxcontrol.legfields import (
    DERIVED_FIELDS,
    OWN_FIELDS,
    SOURCE_FIELDS,
    decode_overrides,
    encode_overrides,
)


def endpoint_of(name: str) -> str:
    """PJSIP/alice-0000001a -> PJSIP/alice; Local/1001@rg-00000001;2 -> Local/1001@rg."""
    base = name.split(";", 1)[0]
    head, sep, tail = base.rpartition("-")
    return head if sep and head and "/" in head else base


@dataclass(slots=True)
class LiveLeg:
    """The fields a leg owns (OWN_FIELDS: LEG and BOOKKEEPING of the table), the own values
    classification reads (cnumber, spresent), and what was derived and written."""

    uniqueid: str
    machine: int
    channel: str
    start: int
    endpoint: str = ""
    status: str = ""
    answered: int = 0
    callid: str = ""
    sip_callid: str = ""
    recording: str = ""
    recording_paused: int = 0  # our recording of it paused (recorder/recording.py)
    monitor: str = ""  # the strongest live monitoring session on it (live.py)
    caller_number: str = ""
    caller_name: str = ""
    cnumber: str = ""  # the number dialled on this leg; a row shows its call's (source)
    spresent: int = 0  # this leg's presentation; a row shows its call's (source)
    dialled_by: str = ""  # the leg whose Dial created this one
    dialled: str = ""  # the leg this one dialled (the answered one, once known)
    dialstring: str = ""  # how this leg was dialled ("PJSIP/0207946000@trunk1")
    spying: str = ""  # a supervisor's leg: <mode>/<monitored uniqueid> (live.py)
    overrides: dict[str, Any] = field(default_factory=dict)  # PBX_<FIELD> of this leg
    derived: dict[str, Any] = field(default_factory=dict)  # DERIVED_FIELDS, by rules.CallClassifier
    # The call's source as last derived (kept when the originating leg is gone).
    source: dict[str, Any] | None = None
    overmax: int | None = None  # decided once, when the source customer is known
    written: dict[str, Any] | None = None  # the row as last written to the database
    counted: tuple[int, str] | None = None  # (scustomer, callid) this leg is counted under

    @property
    def is_local(self) -> bool:
        return self.channel.startswith("Local/")

    def local_pair_name(self) -> str:
        """The other half of a Local channel: ...;1 <-> ...;2."""
        if self.channel.endswith(";1"):
            return self.channel[:-1] + "2"
        if self.channel.endswith(";2"):
            return self.channel[:-1] + "1"
        return ""

    def row(self) -> dict[str, Any]:
        """The database row: own fields, derived classification, then dialplan overrides."""
        row = dict(zip(OWN_FIELDS, _own(self), strict=True))
        row["overmax"] = self.overmax or 0
        row.update(self.derived)
        row.update(self.overrides)
        row["overrides"] = encode_overrides(self.overrides)
        return row

    @classmethod
    def from_row(cls, row: Any) -> LiveLeg:
        """A leg as written before (a restart keeps what was derived for it)."""
        leg = cls(**{name: getattr(row, name) for name in OWN_FIELDS})
        leg.cnumber, leg.spresent = row.cnumber, row.spresent
        leg.overrides = decode_overrides(row.overrides)
        leg.overmax = row.overmax
        leg.derived = {f: getattr(row, f) for f in DERIVED_FIELDS}
        leg.source = {f: getattr(row, f) for f in SOURCE_FIELDS}
        leg.source.update(ingroup=row.ingroup, _inbound=row.direction == "in")
        leg.written = leg.row()
        return leg


@dataclass(frozen=True)
class Recorded:
    """Our recording of a leg, as the holder's executor knows it (recorder/recording.py),
    through the writer's queue. Not from ARI: it sends no event for a pause, and a variable
    set on the recording snoop waits until its recording ends (Asterisk runs a Stasis
    channel's commands one at a time, and the recording is one)."""

    uniqueid: str
    path: str  # the file's absolute path on the Asterisk host
    running: bool  # False: it ended (the leg shows it no more, if it showed this one)
    paused: int = 0


def ours(recording: str, name: str) -> str:
    """`recording` if it is the file of the ARI recording `name` (`<dir>/<name>.<format>`)."""
    return recording if recording.rpartition(".")[0].endswith(f"/{name}") else ""


_own = attrgetter(*OWN_FIELDS)
# The table and the class must agree: a field added to LEG_TABLE needs its attribute here.
if _missing := set(OWN_FIELDS) - set(LiveLeg.__slots__):
    raise TypeError(f"LiveLeg lacks the fields {sorted(_missing)} of LEG_TABLE")
