"""Every field of a leg, declared once: its column, its ARI source and the rule that makes it.

It sits at the package root, below both layers that read it: db/legs.py makes the SQL
columns from it, recorder/ the in-memory leg and its rules; neither imports the other for it.
It holds the table, the field lists derived from it and the overrides' text form, and
imports the standard library only: nothing of db/, recorder/ or http/.

`LEG_TABLE` below is the list. The SQL columns of `legs` and `leg_history` (db/legs.py),
the in-memory leg (recorder/leg.py: `LiveLeg`, its row and `from_row`) and the API's field
list are all derived from it. The rules are the functions of recorder/rules.py; the table
names the one that makes each field. A field is made by one of:

- LEG: the leg's own channel. `take_snapshot` (every channel event carries the snapshot),
  `take_dial` (Dial events), `take_varset` (ChannelVarset); machine and callid by
  recorder/live.py (the connection; CHANNEL(linkedid) may move a leg to another call).
- SOURCE: the call's originating leg (the leg whose id is the callid), `source_of`.
- DESTINATION: the leg this leg reached, Local channels followed, `destination_of`
  (`CallClassifier`, beside it in rules.py, finds that leg and the originating one).
- CALL: this leg's place in its call, `direction_of`.
- ONCE: overmax, decided when the leg's source customer is first known (recorder/live.py).
Any API field can then be overridden per leg with Set(PBX_<FIELD>=value), `take_varset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LEG, SOURCE, DESTINATION, CALL, ONCE, BOOKKEEPING = (
    "leg",
    "source",
    "destination",
    "call",
    "once",
    "bookkeeping",
)


@dataclass(frozen=True, slots=True)
class LegField:
    name: str
    type: type  # str or int; the column is NOT NULL, "" / 0 by default
    width: int  # String(width); 0 for int, -1 for Text
    made_by: str  # LEG, SOURCE, DESTINATION, CALL, ONCE or BOOKKEEPING (not in the API)
    ari: str  # where the value comes from in ARI
    rule: str  # how it becomes the field (the function that applies it, in rules.py)


_F = LegField
# fmt: off
#: The leg's fields, in column order. `ari` names the typed values of ari/channel.py and
#: ari/events.py (`Channel.state` is the snapshot's `state`, and so on).
LEG_TABLE: tuple[LegField, ...] = (
    _F("machine", int, 0, LEG, "-", "machine id of the connection the event came on"),
    _F("uniqueid", str, 150, LEG, "Channel.id", "as is"),
    _F("callid", str, 150, LEG, "Channel.linkedid", "CHANNEL(linkedid), updated when it "
       "changes; without channelvars GET /channels/{id}/variable (new leg, bridge entry)"),
    _F("channel", str, 255, LEG, "Channel.name", "as first seen"),
    _F("start", int, 0, LEG, "Channel.created", "creationtime, whole Unix seconds"),
    _F("answered", int, 0, LEG, "event timestamp", "take_snapshot: the first in state Up"),
    _F("status", str, 64, LEG, "Channel.state", "take_snapshot: verbatim"),
    _F("sip_callid", str, 255, LEG, "Channel.protocol_id", "take_snapshot: PJSIP/ only"),
    _F("recording", str, 1024, LEG, "ChannelVarset MIXMONITOR_FILENAME, Recording*, ours",
       "take_varset; live.py on Recording* of channel:<id>; our recording: Recorded"),
    _F("recording_paused", int, 0, LEG, "our recording's executor (Recorded)",
       "live.py: 1 while our recording of the leg is paused (SPEC §11.8)"),
    _F("monitor", str, 8, LEG, "ChannelVarset PBXC_MONITOR on a supervisor's leg",
       "live.py: the strongest live session of the supervisors' legs spying on it (§11.8)"),
    _F("snumber", str, 128, SOURCE, "origin Channel.caller_number", "source_of: line number"
       " for a phone, caller number otherwise"),
    _F("stype", str, 32, SOURCE, "origin endpoint", "source_of: phone / external / \"\""),
    _F("scustomer", int, 0, SOURCE, "origin endpoint, cnumber", "source_of: line's customer;"
       " from a peer the owner of the called number; else 0"),
    _F("spresent", int, 0, SOURCE, "Channel.presentation", "take_snapshot, then source_of:"
       " the origin's caller_presentation or CALLERID(pres) as a number; 0 = allowed"),
    _F("callerid_internal", str, 128, SOURCE, "origin caller_number", "source_of: line's"
       " value, else as received"),
    _F("callerid_external", str, 128, SOURCE, "origin caller_number", "as callerid_internal"),
    _F("callername_internal", str, 128, SOURCE, "origin caller_name", "as callerid_internal"),
    _F("callername_external", str, 128, SOURCE, "origin caller_name", "as callerid_internal"),
    _F("cnumber", str, 128, SOURCE, "Channel.dnid, Channel.exten", "take_snapshot: "
       "CALLERID(dnid), else the first extension but s; source_of: the origin's"),
    _F("ctype", str, 32, SOURCE, "-", "source_of: \"\" (nothing redirects yet)"),
    _F("dnumber", str, 128, DESTINATION, "Dial.dialstring, target endpoint",
       "destination_of: line number; for a peer the dialled number"),
    _F("dtype", str, 32, DESTINATION, "target endpoint", "destination_of: phone / external"
       " / \"\" until known"),
    _F("dcustomer", int, 0, DESTINATION, "target endpoint", "destination_of: line's customer"),
    _F("peer", int, 0, DESTINATION, "target endpoint", "destination_of: the peer's id"),
    _F("billing_peer", int, 0, DESTINATION, "target endpoint", "destination_of"),
    _F("ingroup", int, 0, CALL, "origin endpoint", "direction_of: the peer's inbound group"
       " on legs whose direction is in"),
    _F("outgroup", int, 0, DESTINATION, "target endpoint", "destination_of"),
    _F("overmax", int, 0, ONCE, "-", "live.py: 1 if the source customer was at max_calls"),
    _F("direction", str, 16, CALL, "endpoints, Dial", "direction_of: in / out / internal"),
    _F("endpoint", str, 128, BOOKKEEPING, "Channel.name", "endpoint_of (recorder/leg.py)"),
    _F("caller_number", str, 128, BOOKKEEPING, "Channel.caller_number", "take_snapshot"),
    _F("caller_name", str, 128, BOOKKEEPING, "Channel.caller_name", "take_snapshot"),
    _F("dialled_by", str, 150, BOOKKEEPING, "Dial.caller", "take_dial: the leg that dialled"),
    _F("dialled", str, 150, BOOKKEEPING, "Dial.peer", "take_dial: the leg it dialled"),
    _F("dialstring", str, 255, BOOKKEEPING, "Dial.dialstring", "take_dial"),
    _F("spying", str, 160, BOOKKEEPING, "ChannelVarset PBXC_MONITOR",
       "live.py: on a supervisor's leg, <mode>/<uniqueid of the leg it monitors>"),
    _F("overrides", str, -1, BOOKKEEPING, "ChannelVarset PBX_*", "take_varset, as name=value"
       " lines"),
)
# fmt: on

FIELDS = {f.name: f for f in LEG_TABLE}
LEG_STRING_FIELDS = tuple(f.name for f in LEG_TABLE if f.made_by != BOOKKEEPING and f.type is str)
LEG_INT_FIELDS = tuple(f.name for f in LEG_TABLE if f.made_by != BOOKKEEPING and f.type is int)
#: Not made from ARI but from the machine's lease (SPEC §12): 1 while the leg's machine is
#: recorded, 0 while its lease has not been renewed for 2 x takeover_seconds. A column of
#: both leg tables (default 1), written only by pbxcontrol/db/unrecorded.py; not in LEG_TABLE,
#: so the recorder neither makes nor overrides it.
RECORDED = "recorded"
#: The fields of SPEC §4 as the API returns them, and `recorded`, in a stable order.
LEG_FIELDS = tuple(sorted((*LEG_STRING_FIELDS, *LEG_INT_FIELDS, RECORDED)))
#: What the in-memory leg keeps as its own and writes as is.
OWN_FIELDS = tuple(f.name for f in LEG_TABLE if f.made_by == LEG) + tuple(
    f.name for f in LEG_TABLE if f.made_by == BOOKKEEPING and f.name != "overrides"
)
SOURCE_FIELDS = tuple(f.name for f in LEG_TABLE if f.made_by == SOURCE)
DESTINATION_FIELDS = tuple(f.name for f in LEG_TABLE if f.made_by == DESTINATION)
#: What classification writes into a leg (rules.py CallClassifier).
DERIVED_FIELDS = SOURCE_FIELDS + DESTINATION_FIELDS + ("ingroup", "direction")
#: Fields a dialplan may set with Set(PBX_<FIELD>=value).
#: Not `monitor`: it says who is listening, which only the recorder knows (SPEC §11.8).
OVERRIDABLE = frozenset(LEG_STRING_FIELDS + LEG_INT_FIELDS) - {"uniqueid", "machine", "monitor"}


def encode_overrides(overrides: dict[str, Any]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def decode_overrides(text: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name in OVERRIDABLE:
            result[name] = int(value) if FIELDS[name].type is int else value
    return result
