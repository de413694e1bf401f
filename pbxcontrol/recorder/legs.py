"""A live leg in memory, and the classification of SPEC §4 derived from its call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pbxcontrol.db.models import LEG_INT_FIELDS, LEG_STRING_FIELDS
from pbxcontrol.recorder.provisioned import Provisioned

#: Fields a dialplan may set with Set(PBX_<FIELD>=value).
OVERRIDABLE = frozenset(LEG_STRING_FIELDS + LEG_INT_FIELDS) - {"uniqueid", "machine"}
SOURCE_FIELDS = (
    "snumber",
    "stype",
    "scustomer",
    "spresent",
    "callerid_internal",
    "callerid_external",
    "callername_internal",
    "callername_external",
    "cnumber",
    "ctype",
)
_MAX_HOPS = 8


def endpoint_of(name: str) -> str:
    """PJSIP/alice-0000001a -> PJSIP/alice; Local/1001@rg-00000001;2 -> Local/1001@rg."""
    base = name.split(";", 1)[0]
    head, sep, tail = base.rpartition("-")
    return head if sep and head and "/" in head else base


@dataclass(slots=True)
class Leg:
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
    caller_number: str = ""
    caller_name: str = ""
    exten: str = ""  # what the caller dialled: CALLERID(dnid), else the first extension
    presentation: int = 0
    dialled_by: str = ""  # the leg whose Dial created this one
    dialled: str = ""  # the leg this one dialled (the answered one, once known)
    dialstring: str = ""  # how this leg was dialled ("0207946000@trunk1")
    overrides: dict[str, str] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None  # the call's source as last derived (kept when the
    # originating leg is gone)
    overmax: int | None = None  # decided once, when the source customer is known
    written: dict[str, Any] | None = None  # the row as last written to the database
    counted: tuple[int, str] | None = None  # (scustomer, callid) this leg is counted under

    @property
    def is_local(self) -> bool:
        return self.channel.startswith("Local/")

    def local_pair_name(self) -> str:
        if self.channel.endswith(";1"):
            return self.channel[:-1] + "2"
        if self.channel.endswith(";2"):
            return self.channel[:-1] + "1"
        return ""

    def row(self) -> dict[str, Any]:
        """The database row: own fields, derived classification, then dialplan overrides."""
        row: dict[str, Any] = {
            "machine": self.machine,
            "uniqueid": self.uniqueid,
            "callid": self.callid,
            "channel": self.channel,
            "start": self.start,
            "answered": self.answered,
            "status": self.status,
            "sip_callid": self.sip_callid,
            "recording": self.recording,
            "endpoint": self.endpoint,
            "caller_number": self.caller_number,
            "caller_name": self.caller_name,
            "dialled_by": self.dialled_by,
            "dialled": self.dialled,
            "dialstring": self.dialstring,
            "overmax": self.overmax or 0,
        }
        row.update(self.derived)
        for name, value in self.overrides.items():
            row[name] = value
        row["overrides"] = _encode_overrides(self.overrides)
        return row

    @classmethod
    def from_row(cls, row: Any) -> Leg:
        leg = cls(
            uniqueid=row.uniqueid,
            machine=row.machine,
            channel=row.channel,
            start=row.start,
            endpoint=row.endpoint,
            status=row.status,
            answered=row.answered,
            callid=row.callid,
            sip_callid=row.sip_callid,
            recording=row.recording,
            caller_number=row.caller_number,
            caller_name=row.caller_name,
            exten=row.cnumber,
            presentation=row.spresent,
            dialled_by=row.dialled_by,
            dialled=row.dialled,
            dialstring=row.dialstring,
            overrides=_decode_overrides(row.overrides),
            overmax=row.overmax,
        )
        leg.derived = {f: getattr(row, f) for f in DERIVED_FIELDS}
        leg.source = {f: getattr(row, f) for f in SOURCE_FIELDS}
        leg.source.update(ingroup=row.ingroup, _inbound=row.direction == "in")
        leg.written = leg.row()
        return leg


DESTINATION_FIELDS = ("dtype", "dnumber", "dcustomer", "peer", "billing_peer", "outgroup")
DERIVED_FIELDS = SOURCE_FIELDS + (
    "dnumber",
    "dtype",
    "dcustomer",
    "peer",
    "billing_peer",
    "ingroup",
    "outgroup",
    "direction",
)


def _encode_overrides(overrides: dict[str, Any]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def _decode_overrides(text: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name in OVERRIDABLE:
            result[name] = int(value) if name in LEG_INT_FIELDS else value
    return result


def override(leg: Leg, variable: str, value: str) -> bool:
    """Apply Set(PBX_<FIELD>=value); False when the field or value is not usable."""
    name = variable[4:].lower()
    if name not in OVERRIDABLE:
        return False
    if name in LEG_INT_FIELDS:
        try:
            leg.overrides[name] = int(value)
        except ValueError:
            return False
    else:
        leg.overrides[name] = value
    return True


class CallClassifier:
    """Derives source, destination, peer and direction for every leg of one call."""

    def __init__(self, legs: dict[str, Leg], by_channel: dict[str, str], prov: Provisioned):
        self.legs = legs
        self.by_channel = by_channel
        self.prov = prov

    def classify(self, call: list[Leg]) -> None:
        origin = self._origin(call)
        source = self._source(origin, call)
        for leg in call:
            leg.source = source
        source = dict(source)
        inbound = source.pop("_inbound")
        targets = {leg.uniqueid: self._target(leg) for leg in call}
        outbound = any(
            t is not None and t.endpoint in self.prov.peers for t in targets.values()
        ) or any(
            leg.endpoint in self.prov.peers and leg is not origin and leg.dialled_by for leg in call
        )
        for leg in call:
            derived = dict(source)
            target = targets[leg.uniqueid]
            if target is None and leg.derived.get("dtype"):
                # The leg it reached has gone (bridged away, transferred): keep what it was.
                derived.update({f: leg.derived[f] for f in DESTINATION_FIELDS})
            else:
                derived.update(self._destination(target))
                if derived["dtype"] == "external" and not derived["dnumber"]:
                    # Seen only through GET /channels: no Dial event gave the dialstring and
                    # Asterisk clears a dialled leg's exten on answer; the caller dialled it.
                    derived["dnumber"] = source["cnumber"]
            on_peer = leg.endpoint in self.prov.peers
            if on_peer:
                direction = (
                    "out" if leg.dialled_by or (origin is not None and leg is not origin) else "in"
                )
            else:
                direction = "in" if inbound else "out" if outbound else "internal"
            derived["direction"] = direction
            derived["ingroup"] = source["ingroup"] if direction == "in" else 0
            leg.derived = derived

    def _origin(self, call: list[Leg]) -> Leg | None:
        callid = call[0].callid
        for leg in call:
            if leg.uniqueid == callid:
                return leg
        return None

    def _source(self, origin: Leg | None, call: list[Leg]) -> dict[str, Any]:
        if origin is None:
            # The originating leg has ended (a transfer, say): keep what was derived from
            # it; a leg that never saw it takes the source of a leg that did.
            known = [leg for leg in call if leg.source]
            if known:
                return known[0].source
            origin = min(call, key=lambda leg: (leg.start, leg.uniqueid))
        line = self.prov.lines.get(origin.endpoint)
        peer = self.prov.peers.get(origin.endpoint)
        number, name = origin.caller_number, origin.caller_name
        if line is not None:
            source = {
                "stype": "phone",
                "snumber": line.number,
                "scustomer": line.customer,
                "callerid_internal": line.callerid_internal or number,
                "callerid_external": line.callerid_external or number,
                "callername_internal": line.callername_internal or name,
                "callername_external": line.callername_external or name,
                "ingroup": 0,
                "_inbound": False,
            }
        else:
            source = {
                "stype": "external" if peer else "",
                "snumber": number,
                "scustomer": self.prov.numbers.get(origin.exten, 0) if peer else 0,
                "callerid_internal": number,
                "callerid_external": number,
                "callername_internal": name,
                "callername_external": name,
                "ingroup": peer.ingroup if peer else 0,
                "_inbound": peer is not None,
            }
        source.update(spresent=origin.presentation, cnumber=origin.exten, ctype="")
        return source

    def _follow(self, leg: Leg | None) -> Leg | None:
        """Through Local channel pairs (;1 -> ;2 -> what ;2 dialled) to the real endpoint."""
        for _ in range(_MAX_HOPS):
            if leg is None or not leg.is_local:
                return leg
            if leg.channel.endswith(";1"):
                pair = self.legs.get(self.by_channel.get(leg.local_pair_name(), ""))
                leg = self.legs.get(pair.dialled) if pair else None
            else:
                leg = self.legs.get(leg.dialled)
        return None

    def _target(self, leg: Leg) -> Leg | None:
        if leg.is_local:
            return self._follow(leg)
        if leg.dialled_by:
            return leg
        return self._follow(self.legs.get(leg.dialled))

    def _destination(self, target: Leg | None) -> dict[str, Any]:
        dest = {
            "dtype": "",
            "dnumber": "",
            "dcustomer": 0,
            "peer": 0,
            "billing_peer": 0,
            "outgroup": 0,
        }
        if target is None:
            return dest
        line = self.prov.lines.get(target.endpoint)
        if line is not None:
            dest.update(dtype="phone", dnumber=line.number, dcustomer=line.customer)
            return dest
        peer = self.prov.peers.get(target.endpoint)
        if peer is not None:
            dialled = target.dialstring.split("@", 1)[0].rsplit("/", 1)[-1]
            dest.update(
                dtype="external",
                dnumber=dialled or target.exten,
                peer=peer.id,
                billing_peer=peer.billing_peer,
                outgroup=peer.outgroup,
            )
        return dest
