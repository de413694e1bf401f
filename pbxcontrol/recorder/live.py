"""LiveLegs: one machine's live legs in memory, kept equal to Asterisk's channels.

Events and GET /channels snapshots are applied here; `changes()` says what to write. No I/O:
recorder/store.py writes, recorder/machine.py feeds it from the websocket.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pbxcontrol.ari.channel import AsteriskInfo, Channel
from pbxcontrol.ari.events import (
    ApplicationReplaced,
    ChannelDestroyed,
    ChannelEnteredBridge,
    ChannelSnapshotEvent,
    ChannelVarset,
    Dial,
    Event,
    OtherVarset,
    RecordingFinished,
    RecordingStarted,
)
from pbxcontrol.recorder import rules
from pbxcontrol.recorder.leg import LiveLeg, Recorded, endpoint_of, ours
from pbxcontrol.recorder.provisioned import Provisioned

log = logging.getLogger("pbxcontrol.recorder")

#: Channels the recording process creates for call control that are plumbing, not legs (SPEC
#: §11.2 item 7, §11.8): `pbxc-<intent>-<role>`, every role but the real legs' (party1,
#: party1b, supervisor). Never rows, never counted.
PLUMBING = re.compile(r"pbxc-[0-9]+-(?!(?:party1b?|supervisor)$)[a-z0-9]+")
#: Monitoring modes, weakest first (SPEC §11.6); a leg shows the strongest session on it.
MODES = ("listen", "whisper", "barge")
ENDED_MEMORY = 50_000  # ids of ended legs remembered, so late events never resurrect them


@dataclass
class Changes:
    """Rows to write in one transaction; call `committed()` once it has committed."""

    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    ended: list[dict[str, Any]]  # history rows of legs that ended
    gone: list[str]  # uniqueids of ended legs that were written to the live table
    committed: Callable[[], None]

    @property
    def empty(self) -> bool:
        """Nothing to write."""
        return not (self.inserts or self.updates or self.ended or self.gone)


class LiveLegs:
    def __init__(
        self,
        machine: int,
        provisioned: Callable[[], Provisioned],
        linkedid_lookup: Callable[[str], str | None] | None = None,
    ):
        self.machine = machine
        self.provisioned = provisioned
        self.linkedid_lookup = linkedid_lookup  # without channelvars: ask ARI
        self.legs: dict[str, LiveLeg] = {}
        self.by_channel: dict[str, str] = {}  # channel name -> uniqueid (Local pairs)
        self.calls: dict[str, set[str]] = {}  # callid -> uniqueids
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.startup_time: str | None = None
        self._dirty_calls: set[str] = set()
        self._ending: dict[str, tuple[dict[str, Any], bool]] = {}  # uniqueid -> (row, written)
        self._snapshot_seq: dict[str, int] = {}  # uniqueid -> seq of its last REST snapshot
        self._customer_calls: dict[int, dict[str, int]] = {}  # scustomer -> {callid: legs}
        self._spied: set[str] = set()  # legs whose supervisors changed (_monitors)
        self.snoops: dict[str, str] = {}  # our snoops (plumbing) -> the leg each snoops on

    def take_over(self, legs: Iterable[LiveLeg], startup_time: str | None) -> None:
        """Legs written before (by this or an earlier process), and the startup time then."""
        for leg in legs:
            self._add(leg)
        self.startup_time = startup_time

    # -- events --------------------------------------------------------------------------
    def apply(self, event: Event, seq: int = 0) -> None:
        match event:
            case OtherVarset(timestamp=ts, channel=lazy):
                if lazy.id not in self.legs:  # only news when it shows a channel we do not know
                    self._leg_for(lazy.parse(), ts, seq)
            case ChannelSnapshotEvent(timestamp=ts, channel=channel):
                self._leg_for(channel, ts, seq)
            case ChannelVarset(timestamp=ts, channel=channel, variable="PBXC_MONITOR", value=v):
                if (leg := self._leg_for(channel, ts, seq)) is not None:
                    self._spy(leg, v)
            case ChannelVarset(timestamp=ts, channel=channel, variable=variable, value=value):
                if (leg := self._leg_for(channel, ts, seq)) is not None:
                    self._varset(leg, variable, value)
            case ChannelDestroyed(timestamp=ts, channel=channel, cause=cause, cause_txt=text):
                if (leg := self._leg_for(channel, ts, seq)) is not None:
                    self._end(leg, ts, cause, text)
                self.snoops.pop(channel.id, None)
            case ChannelEnteredBridge(timestamp=ts, channel=channel):
                leg = self._leg_for(channel, ts, seq)
                if leg is not None and self.linkedid_lookup and channel.linkedid is None:
                    # Bridging can change the linkedid; without channelvars we must ask.
                    self._set_callid(leg, self.linkedid_lookup(leg.uniqueid) or leg.callid)
            case Dial():
                self._dial(event, seq)
            case RecordingStarted() | RecordingFinished():
                self._recording(event)
            case ApplicationReplaced():
                log.warning(
                    "machine %s: another client took over our ARI application", self.machine
                )

    def _leg_for(self, ch: Channel, ts: float, seq: int) -> LiveLeg | None:
        leg = self.legs.get(ch.id)
        if leg is None:
            if ch.id in self.ended:
                return None  # a late event after the destroy: never resurrect
            if PLUMBING.fullmatch(ch.id):  # never a leg; our snoop names the leg it records
                if ch.name.startswith("Snoop/"):
                    self.snoops[ch.id] = ch.name[len("Snoop/") :].rpartition("-")[0]
                return None
            leg = LiveLeg(ch.id, self.machine, ch.name, int(ch.created), endpoint_of(ch.name))
            self._add(leg)
            self._snapshot(leg, ch, ts)
            if not leg.callid:
                found = self.linkedid_lookup(ch.id) if self.linkedid_lookup else None
                self._set_callid(leg, found or ch.id)
        elif seq > self._snapshot_seq.get(ch.id, -1):  # not older than the last GET /channels
            self._snapshot(leg, ch, ts)
        return leg

    def _snapshot(self, leg: LiveLeg, ch: Channel, ts: float) -> None:
        changed = rules.take_snapshot(leg, ch, ts)
        if ch.linkedid and ch.linkedid != leg.callid:
            self._set_callid(leg, ch.linkedid)
        elif changed:
            self._dirty_calls.add(leg.callid)

    def _set_callid(self, leg: LiveLeg, callid: str) -> None:
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

    def _dial(self, ev: Dial, seq: int) -> None:
        peer = self._leg_for(ev.peer, ev.timestamp, seq)
        caller = self._leg_for(ev.caller, ev.timestamp, seq) if ev.caller else None
        if peer is None or caller is None:
            return
        rules.take_dial(caller, peer, ev.dialstring, ev.dialstatus)
        if not ev.dialstatus and ev.peer.linkedid is None and peer.callid == peer.uniqueid:
            self._set_callid(peer, caller.callid)  # no linkedid known: it is the caller's
        self._dirty_calls.update((caller.callid, peer.callid))

    def _varset(self, leg: LiveLeg, variable: str, value: str) -> None:
        taken = rules.take_varset(leg, variable, value)
        if taken is None:
            return
        if not taken:
            log.warning(
                "machine %s: ignoring %s=%r on %s: not a field or not a number",
                *(self.machine, variable, value, leg.channel),
            )
        self._dirty_calls.add(leg.callid)

    def _recording(self, ev: RecordingStarted | RecordingFinished) -> None:
        kind, _, target = ev.target_uri.partition(":")
        if kind == "channel" and target in self.snoops:  # our snoop's recording of a leg
            leg = self.legs.get(self.snoops[target])
            if leg is not None and isinstance(ev, RecordingFinished):
                # It ended without our stop (a full disk, the snoop hung up by hand).
                self.recorded(Recorded(leg.uniqueid, ours(leg.recording, ev.name), False))
            return
        leg = self.legs.get(target) if kind == "channel" else None
        if leg is None:
            return
        if isinstance(ev, RecordingStarted):
            leg.recording = ev.name
        elif leg.recording == ev.name:
            leg.recording = ""
        self._dirty_calls.add(leg.callid)

    def recorded(self, news: Recorded) -> None:
        """What the holder's recording executor says of our recording of a leg (SPEC §11.8:
        `recording` the file's path while it runs, `recording_paused` 1 while paused)."""
        leg = self.legs.get(news.uniqueid)
        if leg is None:
            return
        if news.running:
            leg.recording, leg.recording_paused = news.path, news.paused
        elif news.path and leg.recording == news.path:  # never another one's (a MixMonitor)
            leg.recording, leg.recording_paused = "", 0
        else:
            return
        self._dirty_calls.add(leg.callid)

    def _spy(self, supervisor: LiveLeg, spying: str) -> None:
        """A supervisor's leg (the shipped [pbxcontrol-monitor] sets PBXC_MONITOR to
        `<mode>/<uniqueid>` as ChanSpy starts, again at each mode): the monitored leg's
        `monitor` is made again at the next write (SPEC §11.8)."""
        self._spied.update(_target(supervisor.spying), _target(spying))
        supervisor.spying = spying
        self._dirty_calls.add(supervisor.callid)

    def _monitors(self) -> None:
        """Each leg whose supervisors changed shows the strongest live session on it."""
        if not self._spied:
            return
        modes: dict[str, int] = {}
        for leg in self.legs.values():
            if leg.spying:
                mode, _, target = leg.spying.partition("/")
                if target in self._spied and mode in MODES:
                    modes[target] = max(modes.get(target, 0), MODES.index(mode))
        for target in self._spied:
            spied = self.legs.get(target)
            mode = MODES[modes[target]] if target in modes else ""
            if spied is not None and spied.monitor != mode:
                spied.monitor = mode
                self._dirty_calls.add(spied.callid)
        self._spied.clear()

    # -- reconciliation ------------------------------------------------------------------
    def reconcile(
        self, info: AsteriskInfo, channels: list[Channel], seq: int, now: float
    ) -> tuple[int, int]:
        """Make the live legs exactly Asterisk's channels. Returns (live, ended)."""
        ended = 0
        if self.startup_time is not None and info.startup_time != self.startup_time:
            log.warning(
                "machine %s: Asterisk restarted (startup %s -> %s): ending %d legs",
                *(self.machine, self.startup_time, info.startup_time, len(self.legs)),
            )
            for leg in list(self.legs.values()):
                self._end(leg, now, 0, "Asterisk restarted")
                ended += 1
        self.startup_time = info.startup_time
        for ch in channels:
            if self._leg_for(ch, now, seq + 1) is not None:
                self._snapshot_seq[ch.id] = seq
        live = {ch.id for ch in channels}
        for leg in [leg for uid, leg in self.legs.items() if uid not in live]:
            self._end(leg, now, 0, "gone from Asterisk")
            ended += 1
        self._dirty_calls.update(rules.adopt_orphans(self.legs, self.calls))
        return len(self.legs), ended

    # -- ending and writing --------------------------------------------------------------
    def _add(self, leg: LiveLeg) -> None:
        self.legs[leg.uniqueid] = leg
        self.by_channel[leg.channel] = leg.uniqueid
        if leg.callid:
            self.calls.setdefault(leg.callid, set()).add(leg.uniqueid)

    def _end(self, leg: LiveLeg, ts: float, cause: int, cause_txt: str) -> None:
        uid = leg.uniqueid
        self._spied.update(_target(leg.spying))  # a supervisor hung up: its session ended
        if not leg.derived:  # born and gone within one batch: classify it for the history
            self._classifier().classify(self._call_legs(leg.callid))
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

    def _call_legs(self, callid: str) -> list[LiveLeg]:
        return [self.legs[i] for i in self.calls.get(callid, ())]

    def _classifier(self) -> rules.CallClassifier:
        return rules.CallClassifier(self.legs, self.by_channel, self.provisioned())

    def _count_call(self, leg: LiveLeg, customer: int | None) -> None:
        """Keep, per source customer, how many legs each live call has (for overmax)."""
        key = (customer, leg.callid) if customer else None
        if leg.counted == key:
            return
        if leg.counted is not None:
            calls = self._customer_calls[leg.counted[0]]
            calls[leg.counted[1]] -= 1
            if not calls[leg.counted[1]]:
                del calls[leg.counted[1]]
        if customer and key is not None:
            calls = self._customer_calls.setdefault(customer, {})
            calls[leg.callid] = calls.get(leg.callid, 0) + 1
        leg.counted = key

    def _classify_changed(self) -> list[LiveLeg]:
        """Classify every call that changed; decide overmax for legs that lack it."""
        changed: list[LiveLeg] = []
        self._monitors()
        if not self._dirty_calls:
            return changed
        prov = self.provisioned()
        classifier = rules.CallClassifier(self.legs, self.by_channel, prov)
        for callid in self._dirty_calls:
            call = self._call_legs(callid)
            if call:
                classifier.classify(call)
                changed.extend(call)
        for leg in changed:
            customer = leg.derived.get("scustomer", 0)
            if leg.overmax is None and customer:
                # 1 if the source customer was at its max_calls, this call aside, when the
                # leg started (SPEC §4 overmax); decided once.
                limit = prov.max_calls.get(customer, 0)
                others = self._customer_calls.get(customer, {})
                busy = len(others) - (1 if leg.callid in others else 0)
                leg.overmax = 1 if limit and busy >= limit else 0
            self._count_call(leg, customer)
        return changed

    def changes(self) -> Changes:
        """Everything to write since the last committed Changes."""
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        rows: dict[str, dict[str, Any]] = {}
        for leg in self._classify_changed():
            row = leg.row()
            if row != leg.written:
                rows[leg.uniqueid] = row
                (updates if leg.written is not None else inserts).append(row)
        ending = dict(self._ending)

        def committed() -> None:
            for uid, row in rows.items():
                leg = self.legs.get(uid)
                if leg is not None:
                    leg.written = row
            for uid in ending:
                self._ending.pop(uid, None)
            self._dirty_calls.clear()

        ended = [row for row, _ in ending.values()]
        gone = [uid for uid, (_, written) in ending.items() if written]
        return Changes(inserts, updates, ended, gone, committed)


def _target(spying: str) -> list[str]:
    """The monitored leg of a supervisor's `spying` (`<mode>/<uniqueid>`), as a list."""
    target = spying.partition("/")[2]
    return [target] if target else []
