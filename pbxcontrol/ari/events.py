"""ARI events parsed once, at the boundary, into small typed values."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson

LINKEDID_VAR = "CHANNEL(linkedid)"
PRESENTATION_VAR = "CALLERID(pres)"
DNID_VAR = "CALLERID(dnid)"  # the number the caller dialled, whatever the dialplan did since
#: CALLERID(pres) names -> the numeric codes Enswitch reports (Asterisk callerid.c).
PRESENTATIONS = {
    "allowed_not_screened": 0,
    "allowed_passed_screen": 1,
    "allowed_failed_screen": 2,
    "allowed": 3,
    "prohib_not_screened": 32,
    "prohib_passed_screen": 33,
    "prohib_failed_screen": 34,
    "prohib": 35,
    "unavailable": 67,
}

#: Event types carrying a `channel` snapshot that the recorder applies.
CHANNEL_EVENTS = frozenset(
    {
        "ChannelCreated",
        "ChannelStateChange",
        "ChannelDestroyed",
        "ChannelVarset",
        "ChannelCallerId",
        "ChannelConnectedLine",
        "ChannelDialplan",
        "ChannelHangupRequest",
        "ChannelEnteredBridge",
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
    }
)
#: Other event types we read.
OTHER_EVENTS = frozenset(
    {"Dial", "RecordingStarted", "RecordingFinished", "RecordingFailed", "ApplicationReplaced"}
)


class MalformedEvent(ValueError):
    """An event we cannot use: bad JSON, a missing key or a wrong type."""


@dataclass(frozen=True, slots=True)
class Channel:
    """The channel snapshot that every channel event carries (and GET /channels returns)."""

    id: str
    name: str
    state: str
    created: float  # Unix seconds
    caller_number: str
    caller_name: str
    exten: str
    dnid: str
    protocol_id: str
    linkedid: str | None  # from channelvars, when ari.conf asks for CHANNEL(linkedid)
    presentation: int | None = None  # ChannelCallerId, or CALLERID(pres) in channelvars


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    timestamp: float  # Unix seconds, Asterisk's clock
    channel: Channel | None = None
    # Dial
    peer: Channel | None = None
    dialstring: str = ""
    dialstatus: str = ""
    # ChannelVarset
    variable: str = ""
    value: str = ""
    # ChannelDestroyed
    cause: int = 0
    cause_txt: str = ""
    # Recording*
    recording_target: str = ""
    recording_name: str = ""
    # A ChannelVarset of a variable nobody reads (most events are): the snapshot stays
    # unparsed unless the channel turns out to be unknown.
    raw_channel: dict | None = None


#: ChannelVarset variables the recorder acts on; other varsets only matter for their snapshot.
INTERESTING_VARIABLE_PREFIXES = ("MIXMONITOR_FILENAME", "PBX_")


def parse_time(text: Any) -> float:
    if not isinstance(text, str):
        raise MalformedEvent(f"timestamp is not a string: {text!r}")
    return _parse_time(text)


@functools.lru_cache(maxsize=8192)  # every event repeats its channel's creationtime
def _parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise MalformedEvent(f"bad timestamp {text!r}") from None


def _str(obj: dict, key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise MalformedEvent(f"{key} is not a string: {value!r}")
    return value


def parse_channel(obj: Any) -> Channel:
    if not isinstance(obj, dict):
        raise MalformedEvent("channel is not an object")
    caller = obj.get("caller") or {}
    dialplan = obj.get("dialplan") or {}
    channelvars = obj.get("channelvars") or {}
    if (
        not isinstance(caller, dict)
        or not isinstance(dialplan, dict)
        or not isinstance(channelvars, dict)
    ):
        raise MalformedEvent("caller, dialplan or channelvars is not an object")
    linkedid = channelvars.get(LINKEDID_VAR)
    # Set(CALLERID(pres)=prohib) raises no ChannelCallerId event (Asterisk 22): the
    # snapshot carries it when ari.conf has channelvars = ...,CALLERID(pres).
    pres = channelvars.get(PRESENTATION_VAR)
    presentation = PRESENTATIONS.get(pres) if isinstance(pres, str) else None
    return Channel(
        id=_str(obj, "id"),
        name=_str(obj, "name"),
        state=_str(obj, "state"),
        created=parse_time(obj.get("creationtime")),
        caller_number=_str(caller, "number", ""),
        caller_name=_str(caller, "name", ""),
        exten=_str(dialplan, "exten", ""),
        dnid=dnid if isinstance(dnid := channelvars.get(DNID_VAR), str) else "",
        protocol_id=_str(obj, "protocol_id", ""),
        linkedid=linkedid if isinstance(linkedid, str) and linkedid else None,
        presentation=presentation,
    )


def parse_event(raw: str | bytes | dict) -> Event | None:
    """Parse one websocket message. None for event types the recorder has no use for."""
    if isinstance(raw, dict):
        obj = raw
    else:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("event is not an object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MalformedEvent("event has no type")
    if kind not in CHANNEL_EVENTS and kind not in OTHER_EVENTS:
        return None
    ts = parse_time(obj.get("timestamp"))
    try:
        if kind == "Dial":
            caller = obj.get("caller")
            return Event(
                kind,
                ts,
                parse_channel(caller) if caller else None,
                peer=parse_channel(obj.get("peer")),
                dialstring=_str(obj, "dialstring", ""),
                dialstatus=_str(obj, "dialstatus", ""),
            )
        if kind.startswith("Recording"):
            rec = obj.get("recording")
            if not isinstance(rec, dict):
                raise MalformedEvent("recording is not an object")
            return Event(
                kind,
                ts,
                recording_target=_str(rec, "target_uri", ""),
                recording_name=_str(rec, "name", ""),
            )
        if kind == "ApplicationReplaced":
            return Event(kind, ts)
        if kind == "ChannelVarset":
            variable, raw = _str(obj, "variable"), obj.get("channel")
            if not variable.startswith(INTERESTING_VARIABLE_PREFIXES) and isinstance(raw, dict):
                return Event(kind, ts, variable=variable, raw_channel=raw)
            return Event(
                kind, ts, parse_channel(raw), variable=variable, value=_str(obj, "value", "")
            )
        channel = parse_channel(obj.get("channel"))
        if kind == "ChannelDestroyed":
            cause = obj.get("cause", 0)
            if isinstance(cause, bool) or not isinstance(cause, int):
                raise MalformedEvent(f"cause is not an integer: {cause!r}")
            return Event(kind, ts, channel, cause=cause, cause_txt=_str(obj, "cause_txt", ""))
        if kind == "ChannelCallerId":
            pres = obj.get("caller_presentation", 0)
            if isinstance(pres, bool) or not isinstance(pres, int):
                raise MalformedEvent(f"caller_presentation is not an integer: {pres!r}")
            return Event(kind, ts, replace(channel, presentation=pres))
        return Event(kind, ts, channel)
    except MalformedEvent as exc:
        raise MalformedEvent(f"{kind}: {exc}") from None
