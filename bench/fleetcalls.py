"""Real recorded calls (tests/recordings/*.jsonl, captured from Asterisk 22) made into the
traffic of stand-in Asterisk machines: ids unique per machine and per copy, the setup of many
copies interleaved so that all their legs are up at once, and the channels' state as a real
Asterisk would list it after what was sent (GET /channels).

A call is one recording. Its events are cut in two at its peak (every leg up, before the first
hangup): the setup and the teardown. A copy's ids are the recorded ones with a tag: channel ids
and linked ids `1795762523.4` -> `1795762523.4m7c12`, channel names `PJSIP/alice-00000004` ->
`PJSIP/alice-m7c12x00000004` (the endpoint, what provisioning maps to a customer, is kept).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "tests" / "recordings"
#: "A real 5-call capture": 12 legs, 5 linked ids, every leg up at once at the peak.
CALL_SET = ("bridge_two_calls", "attended_transfer", "busy", "unavailable")
#: The busy hour's calls, in turn: the recordings of ordinary calls.
BUSY_SET = (
    "phone_to_trunk_answered",
    "trunk_to_phone_answered",
    "phone_to_phone_answered",
    "mixmonitor",
    "restricted_presentation",
    "restricted_presentation_inbound",
    "trunk_to_phone_cancelled",
    "busy",
    "blind_transfer",
    "ring_group_local",
)
HANGUPS = ("ChannelHangupRequest", "ChannelDestroyed")
#: The machine whose phones belong to a reseller of its own ("solo": Reseller B's customer Solo
#: Ltd), so that a reseller's view holds one machine's legs whatever the fleet's size: its
#: phones' endpoints are renamed PJSIP/alice -> PJSIP/solo-alice (lines of Solo Ltd).
SOLO_MACHINE, SOLO_PREFIX = 2, "solo-"
PHONES = ("alice", "bob", "carol", "dave")
SOLO_CUSTOMERS = [
    {"id": 5, "name": "Reseller B", "parent": 1, "max_calls": 0},
    {"id": 6, "name": "Solo Ltd", "parent": 5, "max_calls": 0},
]
SOLO_PERSON = {"username": "solo", "password": "solo-pass", "customer": 5, "role": "reseller",
               "enabled": True}  # fmt: skip
_SUFFIX = re.compile(r"-([0-9a-f]{8})(?=[;\"/,@ ])")


@dataclass(frozen=True)
class Call:
    """One recording as templates: \\0 marks where a channel id gets its tag, \\1 a name."""

    name: str
    setup: tuple[tuple[float, str], ...]  # (seconds after the first event, event template)
    teardown: tuple[tuple[float, str], ...]  # (seconds after the teardown's first event, ...)
    legs: int

    def copy(self, tag: str, part: str) -> list[str]:
        events = self.setup if part == "setup" else self.teardown
        return [text.replace("\0", tag).replace("\1", tag + "x") for _, text in events]

    def steps(self, tag: str, part: str) -> list[tuple[float, str]]:
        events = self.setup if part == "setup" else self.teardown
        return [(t, text.replace("\0", tag).replace("\1", tag + "x")) for t, text in events]


@cache
def call(name: str) -> Call:
    path = RECORDINGS / f"{name}.jsonl"
    events = [r["data"] for r in map(json.loads, path.open()) if r["type"] == "event"]
    ids = {i for e in events for i in _ids(e)}
    texts = []
    for event in events:
        text = json.dumps(event, separators=(",", ":"))
        for old in sorted(ids, key=len, reverse=True):
            text = text.replace(f'"{old}"', f'"{old}\0"')
        texts.append(_SUFFIX.sub(lambda m: "-\1" + m.group(1), text))
    cut = _peak(events)
    times = [_seconds(e["timestamp"]) for e in events]
    setup = tuple((times[i] - times[0], texts[i]) for i in range(cut))
    teardown = tuple((times[i] - times[cut], texts[i]) for i in range(cut, len(events)))
    return Call(name, setup, teardown, len(ids_of_channels(events)))


def ids_of_channels(events: Iterable[dict]) -> set[str]:
    return {c["id"] for e in events for c in _channels(e)}


def _ids(event: dict) -> Iterator[str]:
    for channel in _channels(event):
        yield channel["id"]
        linked = (channel.get("channelvars") or {}).get("CHANNEL(linkedid)")
        if linked:
            yield linked


def _channels(event: dict) -> Iterator[dict]:
    for key in ("channel", "peer", "caller", "replace_channel", "transferee", "transfer_target"):
        channel = event.get(key)
        if isinstance(channel, dict) and "id" in channel:
            yield channel


def _peak(events: list[dict]) -> int:
    """Where the setup ends: every leg up, before the first hangup."""
    live: set[str] = set()
    peak = peak_at = 0
    first_hangup = len(events)
    for i, event in enumerate(events):
        if event["type"] in HANGUPS:
            first_hangup = min(first_hangup, i)
        if event["type"] == "ChannelDestroyed":
            live.discard(event["channel"]["id"])
        else:
            live.update(c["id"] for c in _channels(event))
        if len(live) > peak:
            peak, peak_at = len(live), i + 1
    return max(peak_at, first_hangup)


def _seconds(stamp: str) -> float:
    """2026-11-27T06:55:23.156+0000 -> seconds of the day (recordings stay within one)."""
    clock = stamp[11:23]
    return int(clock[0:2]) * 3600 + int(clock[3:5]) * 60 + float(clock[6:])


def provisioning() -> dict:
    """sandbox/provision.json with the solo reseller: its customer's lines are the sandbox
    phones' under the renamed endpoints."""
    document = json.loads((ROOT / "sandbox" / "provision.json").read_text())
    document["customers"] += SOLO_CUSTOMERS
    document["people"].append(SOLO_PERSON)
    phones = {f"PJSIP/{p}" for p in PHONES}
    document["lines"] += [
        dict(line, endpoint=line["endpoint"].replace("PJSIP/", "PJSIP/" + SOLO_PREFIX), customer=6)
        for line in document["lines"]
        if line["endpoint"] in phones
    ]
    return document


@cache
def machine_call(name: str, machine: int) -> Call:
    """The recording as `machine` sends it (the solo machine: its phones renamed)."""
    recorded = call(name)
    if machine != SOLO_MACHINE:
        return recorded

    def own(steps: tuple[tuple[float, str], ...]) -> tuple[tuple[float, str], ...]:
        out = []
        for at, text in steps:
            for phone in PHONES:
                text = text.replace(f"PJSIP/{phone}", f"PJSIP/{SOLO_PREFIX}{phone}")
            out.append((at, text))
        return tuple(out)

    return Call(name, own(recorded.setup), own(recorded.teardown), recorded.legs)


def tag(machine: int, copy: int, kind: str = "c") -> str:
    return f"m{machine}{kind}{copy}"


def burst(machine: int, copies: int, keep: int) -> tuple[list[str], list[str]]:
    """A machine's backlog in two parts: the setups of `copies` copies of CALL_SET interleaved
    (one event of each in turn: every leg is up at the end of it, the peak), and the teardowns
    of all but `keep` copies, interleaved."""
    units = [
        (machine_call(name, machine), tag(machine, c)) for c in range(copies) for name in CALL_SET
    ]
    setups = [u.copy(t, "setup") for u, t in units]
    ending = [u.copy(t, "teardown") for i, (u, t) in enumerate(units) if i >= keep * len(CALL_SET)]
    return _round_robin(setups), _round_robin(ending)


def _round_robin(lists: list[list[str]]) -> list[str]:
    out: list[str] = []
    longest = max((len(x) for x in lists), default=0)
    for i in range(longest):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def busy_calls(machine: int, kind: str = "b") -> Iterator[tuple[Call, str]]:
    """The busy hour's calls of one machine, in turn from BUSY_SET, each with its own tag."""
    n = 0
    while True:
        for name in BUSY_SET:
            yield machine_call(name, machine), tag(machine, n, kind)
            n += 1


def peak_legs(copies: int) -> int:
    return copies * sum(call(name).legs for name in CALL_SET)


class ChannelState:
    """The channels a real Asterisk would list after the events sent so far, by id."""

    def __init__(self) -> None:
        self.channels: dict[str, dict] = {}
        self.gone: set[str] = set()  # events after a channel's end do not bring it back

    def feed(self, texts: Iterable[str]) -> None:
        self.apply(self.deltas(texts))

    def deltas(self, texts: Iterable[str]) -> list[tuple[str, dict | None]]:
        """What the events change, worked out ahead (the burst's are, before it starts)."""
        out: list[tuple[str, dict | None]] = []
        for text in texts:
            event = json.loads(text)
            if event["type"] == "ChannelDestroyed":
                self.gone.add(event["channel"]["id"])
                out.append((event["channel"]["id"], None))
                continue
            out.extend((c["id"], c) for c in _channels(event) if c["id"] not in self.gone)
        return out

    def apply(self, deltas: list[tuple[str, dict | None]]) -> None:
        for channel_id, channel in deltas:
            if channel is None:
                self.channels.pop(channel_id, None)
            else:
                self.channels[channel_id] = channel

    def listing(self) -> bytes:
        return json.dumps(list(self.channels.values())).encode()
