"""LegRecorder: applies ARI events and GET /channels snapshots to one machine's live legs.

Single-threaded and free of I/O except `flush(session)`; the service feeds it from the
websocket and decides when to write.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from pbxcontrol.ari.events import Channel, Event, MalformedEvent, parse_channel
from pbxcontrol.db.models import Leg as LegTable
from pbxcontrol.db.models import LegHistory, Machine
from pbxcontrol.recorder.legs import CallClassifier, Leg, endpoint_of, override
from pbxcontrol.recorder.provisioned import Provisioned

log = logging.getLogger("pbxcontrol.recorder")

ENDED_MEMORY = 50_000  # ids of ended legs remembered, so late events never resurrect them
LEGS = LegTable.__table__
HISTORY = LegHistory.__table__


class LegRecorder:
    def __init__(
        self,
        machine: int,
        provisioned: Callable[[], Provisioned],
        linkedid_lookup: Callable[[str], str | None] | None = None,
    ):
        self.machine = machine
        self.provisioned = provisioned
        self.linkedid_lookup = linkedid_lookup
        self.legs: dict[str, Leg] = {}
        self.by_channel: dict[str, str] = {}  # channel name -> uniqueid (Local pairs)
        self.calls: dict[str, set[str]] = {}  # callid -> uniqueids
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.startup_time: str | None = None
        self._dirty_calls: set[str] = set()
        self._ending: dict[str, dict[str, Any]] = {}  # uniqueid -> history row to write
        self._snapshot_seq: dict[str, int] = {}  # uniqueid -> seq of its last REST snapshot
        self._customer_calls: dict[int, dict[str, int]] = {}  # scustomer -> {callid: legs}

    # -- loading -------------------------------------------------------------------------
    def load(self, session: Session) -> None:
        """Take over this machine's live legs from the database (a restart keeps what was
        derived before it)."""
        for row in session.execute(select(LEGS).where(LEGS.c.machine == self.machine)):
            leg = Leg.from_row(row)
            self._add(leg)
        machine = session.get(Machine, self.machine)
        self.startup_time = machine.startup_time if machine and machine.startup_time else None

    # -- events --------------------------------------------------------------------------
    def apply(self, ev: Event, seq: int = 0) -> None:
        kind = ev.type
        if kind == "Dial":
            self._dial(ev, seq)
        elif kind.startswith("Recording"):
            self._recording(ev)
        elif kind == "ApplicationReplaced":
            log.warning(
                "machine %s: another client took over our ARI application name", self.machine
            )
        elif ev.raw_channel is not None:
            # An uninteresting varset: only news when it shows a channel we do not know.
            if ev.raw_channel.get("id") not in self.legs:
                channel = parse_channel(ev.raw_channel)
                self._leg_for(channel, ev.timestamp, seq)
        elif ev.channel is not None:
            leg = self._leg_for(ev.channel, ev.timestamp, seq)
            if leg is None:
                return
            if kind == "ChannelVarset":
                self._varset(leg, ev.variable, ev.value)
            elif kind == "ChannelDestroyed":
                self._end(leg, ev.timestamp, ev.cause, ev.cause_txt)
            elif (
                kind == "ChannelEnteredBridge"
                and self.linkedid_lookup
                and ev.channel.linkedid is None
            ):
                # Bridging can change the linkedid; without channelvars we must ask.
                self._set_callid(leg, self.linkedid_lookup(leg.uniqueid) or leg.callid)

    def _leg_for(self, ch: Channel, ts: float, seq: int) -> Leg | None:
        leg = self.legs.get(ch.id)
        if leg is None:
            if ch.id in self.ended:
                return None  # a late event (bridge leave after destroy): never resurrect
            leg = Leg(
                uniqueid=ch.id,
                machine=self.machine,
                channel=ch.name,
                start=int(ch.created),
                endpoint=endpoint_of(ch.name),
                callid="",
            )
            self._add(leg)
            self._snapshot(leg, ch, ts)
            if not leg.callid:
                found = self.linkedid_lookup(ch.id) if self.linkedid_lookup else None
                self._set_callid(leg, found or ch.id)
        elif seq > self._snapshot_seq.get(ch.id, -1):
            self._snapshot(leg, ch, ts)
        return leg

    def _snapshot(self, leg: Leg, ch: Channel, ts: float) -> None:
        changed = leg.status != ch.state
        leg.status = ch.state
        if ch.state == "Up" and not leg.answered:
            leg.answered = int(ts)
        if (ch.caller_number, ch.caller_name) != (leg.caller_number, leg.caller_name):
            leg.caller_number, leg.caller_name, changed = ch.caller_number, ch.caller_name, True
        if ch.dnid and leg.exten != ch.dnid:
            leg.exten, changed = ch.dnid, True
        elif not leg.exten and ch.exten and ch.exten != "s":
            leg.exten, changed = ch.exten, True
        if ch.protocol_id and leg.sip_callid != ch.protocol_id and leg.channel.startswith("PJSIP/"):
            leg.sip_callid, changed = ch.protocol_id, True  # empty in ChannelCreated
        if ch.presentation is not None and ch.presentation != leg.presentation:
            leg.presentation, changed = ch.presentation, True
        if ch.linkedid and ch.linkedid != leg.callid:
            self._set_callid(leg, ch.linkedid)
        elif changed:
            self._dirty_calls.add(leg.callid)

    def _set_callid(self, leg: Leg, callid: str) -> None:
        if leg.callid == callid:
            return
        old = self.calls.get(leg.callid)
        if old is not None:
            old.discard(leg.uniqueid)
            self._dirty_calls.add(leg.callid)
            if not old:
                del self.calls[leg.callid]
        leg.callid = callid
        self.calls.setdefault(callid, set()).add(leg.uniqueid)
        self._dirty_calls.add(callid)

    def _dial(self, ev: Event, seq: int) -> None:
        peer = self._leg_for(ev.peer, ev.timestamp, seq) if ev.peer else None
        caller = self._leg_for(ev.channel, ev.timestamp, seq) if ev.channel else None
        if peer is None or caller is None:
            return
        if not ev.dialstatus:  # the dial begins
            if not peer.dialled_by:
                peer.dialled_by, peer.dialstring = caller.uniqueid, ev.dialstring
            if not caller.dialled:
                caller.dialled = peer.uniqueid
            if ev.peer.linkedid is None and peer.callid == peer.uniqueid:
                self._set_callid(peer, caller.callid)  # no linkedid known: it is the caller's
        elif ev.dialstatus == "ANSWER":
            caller.dialled = peer.uniqueid
        self._dirty_calls.update((caller.callid, peer.callid))

    def _varset(self, leg: Leg, variable: str, value: str) -> None:
        if variable == "MIXMONITOR_FILENAME":
            leg.recording = value
        elif variable.startswith("PBX_"):
            if not override(leg, variable, value):
                log.warning(
                    "machine %s: ignoring %s=%r on %s: not a field or not a number",
                    self.machine,
                    variable,
                    value,
                    leg.channel,
                )
        else:
            return
        self._dirty_calls.add(leg.callid)

    def _recording(self, ev: Event) -> None:
        kind, _, target = ev.recording_target.partition(":")
        leg = self.legs.get(target) if kind == "channel" else None
        if leg is None:
            return
        if ev.type == "RecordingStarted":
            leg.recording = ev.recording_name
        elif leg.recording == ev.recording_name:
            leg.recording = ""
        self._dirty_calls.add(leg.callid)

    # -- reconciliation ------------------------------------------------------------------
    def reconcile(self, info: Any, channels: Any, seq: int, now: float) -> tuple[int, int]:
        """Make the live legs exactly Asterisk's channels. Returns (live, ended)."""
        try:
            startup = info["status"]["startup_time"]
            if not isinstance(startup, str) or not isinstance(channels, list):
                raise TypeError
        except (KeyError, TypeError):
            raise MalformedEvent("GET /asterisk/info or /channels: unexpected shape") from None
        ended = 0
        if self.startup_time is not None and startup != self.startup_time:
            log.warning(
                "machine %s: Asterisk restarted (startup %s -> %s): ending %d legs",
                self.machine,
                self.startup_time,
                startup,
                len(self.legs),
            )
            for leg in list(self.legs.values()):
                self._end(leg, now, 0, "Asterisk restarted")
                ended += 1
        self.startup_time = startup
        live: set[str] = set()
        for raw in channels:
            try:
                ch = parse_channel(raw)
            except MalformedEvent as exc:
                log.warning(
                    "machine %s: skipping a channel in GET /channels: %s", self.machine, exc
                )
                continue
            live.add(ch.id)
            leg = self._leg_for(ch, now, seq + 1)
            if leg is not None:
                self._snapshot_seq[ch.id] = seq
        for leg in [leg for uid, leg in self.legs.items() if uid not in live]:
            self._end(leg, now, 0, "gone from Asterisk")
            ended += 1
        self._adopt_orphans()
        return len(self.legs), ended

    def _adopt_orphans(self) -> None:
        """Legs seen only through GET /channels missed their Dial: relate them through their
        linkedid group, the originating leg being the one whose id is the linkedid."""
        for callid, ids in self.calls.items():
            origin = self.legs.get(callid)
            if origin is None:
                continue
            members = sorted(
                (self.legs[i] for i in ids if i != callid),
                key=lambda leg: (leg.start, leg.uniqueid),
            )
            for leg in members:
                if not leg.dialled_by and not leg.channel.endswith(";2"):
                    leg.dialled_by = callid
                    if not origin.dialled:
                        origin.dialled = leg.uniqueid
            self._dirty_calls.add(callid)

    # -- ending and writing --------------------------------------------------------------
    def _add(self, leg: Leg) -> None:
        self.legs[leg.uniqueid] = leg
        self.by_channel[leg.channel] = leg.uniqueid
        if leg.callid:
            self.calls.setdefault(leg.callid, set()).add(leg.uniqueid)

    def _end(self, leg: Leg, ts: float, cause: int, cause_txt: str) -> None:
        uid = leg.uniqueid
        if not leg.derived:  # born and gone within one batch: classify it for the history
            CallClassifier(self.legs, self.by_channel, self.provisioned()).classify(
                self._call_legs(leg.callid)
            )
        self.legs.pop(uid, None)
        self.by_channel.pop(leg.channel, None)
        self._snapshot_seq.pop(uid, None)
        members = self.calls.get(leg.callid)
        if members is not None:
            members.discard(uid)
            if not members:
                del self.calls[leg.callid]
            else:
                self._dirty_calls.add(leg.callid)
        call = self._call_legs(leg.callid)
        for other in call:  # a ring group member gave up: follow another one it dialled
            if other.dialled == uid:
                other.dialled = next(
                    (o.uniqueid for o in call if o.dialled_by == other.uniqueid), uid
                )
        self._count_call(leg, None)
        self.ended[uid] = None
        if len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)
        row = leg.row()
        row.update(ended=ts, cause=cause, cause_txt=cause_txt[:128])
        self._ending[uid] = (row, leg.written is not None)

    def _call_legs(self, callid: str) -> list[Leg]:
        return [self.legs[i] for i in self.calls.get(callid, ())]

    def _count_call(self, leg: Leg, customer: int | None) -> None:
        """Keep, per source customer, how many legs each live call has (for overmax)."""
        key = (customer, leg.callid) if customer else None
        if leg.counted == key:
            return
        if leg.counted is not None:
            calls = self._customer_calls[leg.counted[0]]
            calls[leg.counted[1]] -= 1
            if not calls[leg.counted[1]]:
                del calls[leg.counted[1]]
        if key is not None:
            calls = self._customer_calls.setdefault(customer, {})
            calls[leg.callid] = calls.get(leg.callid, 0) + 1
        leg.counted = key

    def flush(self, session: Session) -> Callable[[], None]:
        """Write every change since the last successful flush; call the returned function
        once the transaction has committed."""
        changed: list[Leg] = []
        if self._dirty_calls:
            prov = self.provisioned()
            classifier = CallClassifier(self.legs, self.by_channel, prov)
            for callid in self._dirty_calls:
                call = self._call_legs(callid)
                if call:
                    classifier.classify(call)
                    changed.extend(call)
            for leg in changed:
                customer = leg.derived.get("scustomer", 0)
                if leg.overmax is None and customer:
                    limit = prov.max_calls.get(customer, 0)
                    others = self._customer_calls.get(customer, {})
                    busy = len(others) - (1 if leg.callid in others else 0)
                    leg.overmax = 1 if limit and busy >= limit else 0
                self._count_call(leg, customer)
        inserts, updates, rows = [], [], {}
        for leg in changed:
            row = leg.row()
            if row != leg.written:
                rows[leg.uniqueid] = row
                (updates if leg.written is not None else inserts).append(row)
        if inserts:
            session.execute(insert(LEGS), inserts)
        if updates:
            session.execute(
                update(LEGS).where(
                    and_(
                        LEGS.c.machine == bindparam("b_machine"),
                        LEGS.c.uniqueid == bindparam("b_uniqueid"),
                    )
                ),
                [{**r, "b_machine": r["machine"], "b_uniqueid": r["uniqueid"]} for r in updates],
            )
        ending = dict(self._ending)
        if ending:
            session.execute(insert(HISTORY), [row for row, _ in ending.values()])
            gone = [{"b_uniqueid": uid} for uid, (_, written) in ending.items() if written]
            if gone:
                session.execute(
                    delete(LEGS).where(
                        and_(
                            LEGS.c.machine == self.machine,
                            LEGS.c.uniqueid == bindparam("b_uniqueid"),
                        )
                    ),
                    gone,
                )

        def committed() -> None:
            for uid, row in rows.items():
                leg = self.legs.get(uid)
                if leg is not None:
                    leg.written = row
            for uid in ending:
                self._ending.pop(uid, None)
            self._dirty_calls.clear()

        return committed
