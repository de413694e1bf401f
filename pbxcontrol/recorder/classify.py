"""SPEC §4 classification: which leg is a call's origin and which leg each leg reached.

The fields themselves are made by the rules of recorder/fields.py; this module finds the
legs those rules read (the originating leg, the target through Local channels).
"""

from __future__ import annotations

from typing import Any

from pbxcontrol.recorder.fields import DESTINATION_FIELDS, destination_of, direction_of, source_of
from pbxcontrol.recorder.leg import LiveLeg
from pbxcontrol.recorder.provisioned import Provisioned

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
