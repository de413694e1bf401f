"""ARI events parsed once, at the boundary: one small frozen type per kind the recorder reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pbxcontrol.ari.channel import Channel, MalformedEvent, parse_channel, parse_time, text_of

#: ChannelVarset variables the recorder acts on; other varsets only matter for their snapshot.
INTERESTING_VARIABLE_PREFIXES = ("MIXMONITOR_FILENAME", "PBX_", "PBXC_MONITOR")


@dataclass(frozen=True, slots=True)
class LazyChannel:
    """A snapshot left unparsed until someone needs it (most never do): its id is read."""

    id: str
    _raw: dict[str, Any] = field(repr=False, compare=False)

    def parse(self) -> Channel:
        return parse_channel(self._raw)


@dataclass(frozen=True, slots=True)
class ChannelSnapshotEvent:
    """A channel event whose only news is its snapshot (ChannelCreated, ChannelStateChange,
    ChannelCallerId, ChannelDialplan, ChannelLeftBridge, StasisStart, ...)."""

    timestamp: float  # Unix seconds, Asterisk's clock
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelEnteredBridge:
    timestamp: float
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelDestroyed:
    timestamp: float
    channel: Channel
    cause: int
    cause_txt: str


@dataclass(frozen=True, slots=True)
class ChannelVarset:
    """Set() of a variable the recorder reads (MIXMONITOR_FILENAME, PBX_<FIELD>)."""

    timestamp: float
    channel: Channel
    variable: str
    value: str


@dataclass(frozen=True, slots=True)
class OtherVarset:
    """A ChannelVarset of a variable nobody reads (most events are): only news when it shows
    a channel we do not know, so its snapshot stays unparsed until then."""

    timestamp: float
    channel: LazyChannel


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial progress: caller -> peer. An empty dialstatus means the dial begins."""

    timestamp: float
    caller: Channel | None  # None for an originate
    peer: Channel
    dialstring: str
    dialstatus: str


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    timestamp: float
    target_uri: str  # "channel:<id>" for a channel recording
    name: str


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    """RecordingFinished, or RecordingFailed (`failed`): either way it runs no more."""

    timestamp: float
    target_uri: str
    name: str
    failed: bool = False


@dataclass(frozen=True, slots=True)
class ApplicationReplaced:
    """Another client connected with our application name: we no longer get events."""

    timestamp: float


Event = (
    ChannelSnapshotEvent
    | ChannelEnteredBridge
    | ChannelDestroyed
    | ChannelVarset
    | OtherVarset
    | Dial
    | RecordingStarted
    | RecordingFinished
    | ApplicationReplaced
)


def _snapshot(obj: dict, ts: float) -> Event:
    return ChannelSnapshotEvent(ts, parse_channel(obj.get("channel")))


def _entered_bridge(obj: dict, ts: float) -> Event:
    return ChannelEnteredBridge(ts, parse_channel(obj.get("channel")))


def _destroyed(obj: dict, ts: float) -> Event:
    channel = parse_channel(obj.get("channel"))
    cause = obj.get("cause", 0)
    if isinstance(cause, bool) or not isinstance(cause, int):
        raise MalformedEvent(f"cause is not an integer: {cause!r}")
    return ChannelDestroyed(ts, channel, cause, text_of(obj, "cause_txt", ""))


def _caller_id(obj: dict, ts: float) -> Event:
    channel = parse_channel(obj.get("channel"))
    pres = obj.get("caller_presentation", 0)
    if isinstance(pres, bool) or not isinstance(pres, int):
        raise MalformedEvent(f"caller_presentation is not an integer: {pres!r}")
    return ChannelSnapshotEvent(ts, replace(channel, presentation=pres))


def _varset(obj: dict, ts: float) -> Event:
    variable, raw = text_of(obj, "variable"), obj.get("channel")
    if not variable.startswith(INTERESTING_VARIABLE_PREFIXES) and isinstance(raw, dict):
        channel_id = raw.get("id")
        if isinstance(channel_id, str):
            return OtherVarset(ts, LazyChannel(channel_id, raw))
    return ChannelVarset(ts, parse_channel(raw), variable, text_of(obj, "value", ""))


def _dial(obj: dict, ts: float) -> Event:
    caller = obj.get("caller")
    return Dial(
        ts,
        parse_channel(caller) if caller else None,
        parse_channel(obj.get("peer")),
        text_of(obj, "dialstring", ""),
        text_of(obj, "dialstatus", ""),
    )


def _recording(obj: dict, ts: float) -> Event:
    rec = obj.get("recording")
    if not isinstance(rec, dict):
        raise MalformedEvent("recording is not an object")
    target, name = text_of(rec, "target_uri", ""), text_of(rec, "name", "")
    if obj["type"] == "RecordingStarted":
        return RecordingStarted(ts, target, name)
    return RecordingFinished(ts, target, name, failed=obj["type"] == "RecordingFailed")


_PARSERS: dict[str, Callable[[dict, float], Event]] = {
    **dict.fromkeys(
        (
            "ChannelCreated",
            "ChannelStateChange",
            "ChannelConnectedLine",
            "ChannelDialplan",
            "ChannelHangupRequest",
            "ChannelLeftBridge",
            "ChannelHold",
            "ChannelUnhold",
            "ChannelTalkingStarted",
            "ChannelTalkingFinished",
            "ChannelDtmfReceived",
            "ChannelToneDetected",
            "StasisStart",
            "StasisEnd",
            "ChannelUserevent",
        ),
        _snapshot,
    ),
    "ChannelEnteredBridge": _entered_bridge,
    "ChannelDestroyed": _destroyed,
    "ChannelCallerId": _caller_id,
    "ChannelVarset": _varset,
    "Dial": _dial,
    "RecordingStarted": _recording,
    "RecordingFinished": _recording,
    "RecordingFailed": _recording,
    "ApplicationReplaced": lambda obj, ts: ApplicationReplaced(ts),
}


def parse_event(raw: str | bytes) -> Event | None:
    """Parse one websocket message. None for event types the recorder has no use for."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("event is not an object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MalformedEvent("event has no type")
    parser = _PARSERS.get(kind)
    if parser is None:
        return None
    ts = parse_time(obj.get("timestamp"))
    try:
        return parser(obj, ts)
    except MalformedEvent as exc:
        raise MalformedEvent(f"{kind}: {exc}") from None


def is_application_replaced(message: str) -> bool:
    """Whether a websocket message is ApplicationReplaced. The reader thread asks it of every
    message, so a substring test comes first and only a likely match is parsed."""
    if "ApplicationReplaced" not in message:
        return False
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "ApplicationReplaced"
