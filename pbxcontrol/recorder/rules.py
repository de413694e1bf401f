"""The rules that make a leg's fields (pbxcontrol/legfields.py names the one for each field).

With ari/events.py and ari/channel.py (the typed ARI values), this module is the whole walk
from an ARI event to a leg field: the leg's own fields from its channel, Dial and
ChannelVarset (`take_*`), the call's source and each leg's destination and direction
(`source_of`, `destination_of`, `direction_of`), and which legs those read (`CallClassifier`:
the originating leg, the leg reached through Local channels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pbxcontrol.ari.channel import Channel
from pbxcontrol.legfields import DESTINATION_FIELDS, FIELDS, OVERRIDABLE

if TYPE_CHECKING:
    from pbxcontrol.recorder.leg import LiveLeg
    from pbxcontrol.recorder.provisioned import LineInfo, PeerInfo, Provisioned


# -- LEG: the leg's own channel -------------------------------------------------------------
def take_snapshot(leg: LiveLeg, ch: Channel, ts: float) -> bool:
    """Apply a channel snapshot to the leg's own fields (callid aside, see live.py). True
    when something its call's classification reads has changed."""
    changed = leg.status != ch.state
    leg.status = ch.state
    if ch.state == "Up" and not leg.answered:
        leg.answered = int(ts)
    if (ch.caller_number, ch.caller_name) != (leg.caller_number, leg.caller_name):
        leg.caller_number, leg.caller_name, changed = ch.caller_number, ch.caller_name, True
    if ch.dnid and leg.cnumber != ch.dnid:
        leg.cnumber, changed = ch.dnid, True
    elif not leg.cnumber and ch.exten and ch.exten != "s":
        # Asterisk 22: a channel that enters the dialplan without a number (an originate, a
        # Local channel's ;2 half before its Goto) sits at extension "s", which nobody dialled.
        leg.cnumber, changed = ch.exten, True
    if ch.protocol_id and leg.sip_callid != ch.protocol_id and leg.channel.startswith("PJSIP/"):
        leg.sip_callid, changed = ch.protocol_id, True  # empty in ChannelCreated (Asterisk 22)
    if ch.presentation is not None and ch.presentation != leg.spresent:
        leg.spresent, changed = ch.presentation, True
    return changed


def take_dial(caller: LiveLeg, peer: LiveLeg, dialstring: str, dialstatus: str) -> None:
    """Dial: the peer was dialled by the caller (the first Dial wins: a ring group's members
    each keep their own), and the caller follows the peer that answered."""
    if not dialstatus:  # the dial begins
        if not peer.dialled_by:
            peer.dialled_by, peer.dialstring = caller.uniqueid, dialstring
        if not caller.dialled:
            caller.dialled = peer.uniqueid
    elif dialstatus == "ANSWER":
        caller.dialled = peer.uniqueid


def take_varset(leg: LiveLeg, variable: str, value: str) -> bool | None:
    """MIXMONITOR_FILENAME is the recording; PBX_<FIELD> overrides that field of this leg.
    None when the variable is none of these, False when the override is unusable."""
    if variable == "MIXMONITOR_FILENAME":
        leg.recording = value
        return True
    if not variable.startswith("PBX_"):
        return None
    name = variable[4:].lower()
    if name not in OVERRIDABLE:
        return False
    if FIELDS[name].type is int:
        try:
            leg.overrides[name] = int(value)
        except ValueError:
            return False
    else:
        leg.overrides[name] = value
    return True


# -- SOURCE, DESTINATION, CALL: from the legs of the call --------------------------------------
def source_of(origin: LiveLeg, prov: Provisioned) -> dict[str, Any]:
    """The call's source, from its originating leg; also `ingroup` and `_inbound` (the call
    arrived from a peer), which direction_of needs."""
    line = prov.lines.get(origin.endpoint)
    peer = prov.peers.get(origin.endpoint)
    number, name = origin.caller_number, origin.caller_name
    source: dict[str, Any]
    if line is not None:
        source = _from_line(line, number, name)
    else:
        source = {
            "stype": "external" if peer else "",
            "snumber": number,
            # Inbound is billed to the owner of the number called.
            "scustomer": prov.numbers.get(origin.cnumber, 0) if peer else 0,
            "callerid_internal": number,
            "callerid_external": number,
            "callername_internal": name,
            "callername_external": name,
            "ingroup": peer.ingroup if peer else 0,
            "_inbound": peer is not None,
        }
    source.update(spresent=origin.spresent, cnumber=origin.cnumber, ctype="")
    return source


def _from_line(line: LineInfo, number: str, name: str) -> dict[str, Any]:
    return {
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


def destination_of(target: LiveLeg | None, prov: Provisioned) -> dict[str, Any]:
    """Where a leg was routed, from the real (non-Local) leg it reached: a phone or a peer."""
    dest: dict[str, Any] = dict.fromkeys(DESTINATION_FIELDS, 0)
    dest.update(dtype="", dnumber="")
    if target is None:
        return dest
    line = prov.lines.get(target.endpoint)
    if line is not None:
        dest.update(dtype="phone", dnumber=line.number, dcustomer=line.customer)
        return dest
    peer: PeerInfo | None = prov.peers.get(target.endpoint)
    if peer is not None:
        # "PJSIP/0207946000@trunk1" -> 0207946000
        dialled = target.dialstring.split("@", 1)[0].rsplit("/", 1)[-1]
        dest.update(
            dtype="external",
            dnumber=dialled or target.cnumber,
            peer=peer.id,
            billing_peer=peer.billing_peer,
            outgroup=peer.outgroup,
        )
    return dest


def direction_of(on_peer: bool, dialled: bool, inbound: bool, outbound: bool) -> str:
    """A leg on a peer is `in` when it originated the call, `out` when it was dialled (a
    trunk-to-trunk forward thus shows one of each). Any other leg: `in` if the call came
    from a peer, else `out` if any leg of the call goes to a peer, else `internal`."""
    if on_peer:
        return "out" if dialled else "in"
    return "in" if inbound else "out" if outbound else "internal"


# -- which legs a call's rules read ----------------------------------------------------------
_MAX_HOPS = 8  # Local channels chained deeper than this are a loop


class CallClassifier:
    """Derives source, destination, peer and direction for every leg of one call."""

    def __init__(self, legs: dict[str, LiveLeg], by_channel: dict[str, str], prov: Provisioned):
        self.legs = legs
        self.by_channel = by_channel  # channel name -> uniqueid, to find a Local pair
        self.prov = prov

    def classify(self, call: list[LiveLeg]) -> None:
        origin = self.origin(call)
        source = self._source(origin, call)
        for leg in call:
            leg.source = source
        source = dict(source)
        inbound = source.pop("_inbound")
        peers = self.prov.peers
        targets = {leg.uniqueid: self.target(leg) for leg in call}
        outbound = any(t is not None and t.endpoint in peers for t in targets.values()) or any(
            leg.endpoint in peers and leg is not origin and leg.dialled_by for leg in call
        )
        for leg in call:
            derived = dict(source)
            target = targets[leg.uniqueid]
            if target is None and leg.derived.get("dtype"):
                # The leg it reached has gone (bridged away, transferred): keep what it was.
                derived.update({f: leg.derived[f] for f in DESTINATION_FIELDS})
            else:
                derived.update(destination_of(target, self.prov))
                if derived["dtype"] == "external" and not derived["dnumber"]:
                    # Seen only through GET /channels: no Dial event gave the dialstring and
                    # Asterisk (22) clears a dialled leg's exten on answer; the caller dialled it.
                    derived["dnumber"] = source["cnumber"]
            dialled = bool(leg.dialled_by) or (origin is not None and leg is not origin)
            direction = direction_of(leg.endpoint in peers, dialled, inbound, outbound)
            derived["direction"] = direction
            derived["ingroup"] = source["ingroup"] if direction == "in" else 0
            leg.derived = derived

    @staticmethod
    def origin(call: list[LiveLeg]) -> LiveLeg | None:
        """The originating leg: the one whose id is the callid (its linkedid)."""
        callid = call[0].callid
        return next((leg for leg in call if leg.uniqueid == callid), None)

    def _source(self, origin: LiveLeg | None, call: list[LiveLeg]) -> dict[str, Any]:
        if origin is None:
            # The originating leg has ended (a transfer, say): keep what was derived from
            # it; a leg that never saw it takes the source of a leg that did.
            known = next((leg.source for leg in call if leg.source), None)
            if known is not None:
                return known
            origin = min(call, key=lambda leg: (leg.start, leg.uniqueid))
        return source_of(origin, self.prov)

    def follow(self, leg: LiveLeg | None) -> LiveLeg | None:
        """Through Local channel pairs (;1 -> ;2 -> what ;2 dialled) to the real endpoint.

        Asterisk 22 shows a Local channel as two legs: ;1 is dialled by the caller, its
        pair ;2 runs the dialplan and dials the real endpoint."""
        for _ in range(_MAX_HOPS):
            if leg is None or not leg.is_local:
                return leg
            if leg.channel.endswith(";1"):
                pair = self.legs.get(self.by_channel.get(leg.local_pair_name(), ""))
                leg = self.legs.get(pair.dialled) if pair else None
            else:
                leg = self.legs.get(leg.dialled)
        return None

    def target(self, leg: LiveLeg) -> LiveLeg | None:
        """The real leg this leg reached: itself for a dialled leg, else the leg it dialled;
        Local legs take the real endpoint behind them."""
        if leg.is_local:
            return self.follow(leg)
        if leg.dialled_by:
            return leg
        return self.follow(self.legs.get(leg.dialled))


def adopt_orphans(legs: dict[str, LiveLeg], calls: dict[str, set[str]]) -> set[str]:
    """Legs seen only through GET /channels missed their Dial: relate them through their
    linkedid group, the originating leg being the one whose id is the linkedid. Returns the
    callids of the calls looked at."""
    adopted = set()
    for callid, ids in calls.items():
        origin = legs.get(callid)
        if origin is None:
            continue
        members = sorted(
            (legs[i] for i in ids if i != callid), key=lambda leg: (leg.start, leg.uniqueid)
        )
        for leg in members:
            # A Local ;2 half was dialled by its ;1 half, not by the origin (Asterisk 22
            # gives both halves the linkedid of the call).
            if not leg.dialled_by and not leg.channel.endswith(";2"):
                leg.dialled_by = callid
                if not origin.dialled:
                    origin.dialled = leg.uniqueid
        adopted.add(callid)
    return adopted
