"""ARI's channel snapshot and Asterisk info, parsed once into typed values (ARI's names)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("pbxcontrol.ari")

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


class MalformedEvent(ValueError):
    """Something from ARI we cannot use: bad JSON, a missing key or a wrong type."""


@dataclass(frozen=True, slots=True)
class Channel:
    """The channel snapshot that every channel event carries (and GET /channels returns)."""

    id: str
    name: str
    state: str  # verbatim: "Up", "Ringing", "Rsrvd", "Unknown (n)" ...
    created: float  # creationtime, Unix seconds
    caller_number: str  # caller.number
    caller_name: str  # caller.name
    exten: str  # dialplan.exten: where the dialplan is now
    dnid: str  # channelvars CALLERID(dnid), "" when ari.conf does not ask for it
    protocol_id: str  # the SIP Call-ID of a PJSIP channel ("" in its ChannelCreated)
    linkedid: str | None  # channelvars CHANNEL(linkedid), when ari.conf asks for it
    presentation: int | None = None  # ChannelCallerId, or CALLERID(pres) in channelvars


@dataclass(frozen=True, slots=True)
class AsteriskInfo:
    """GET /asterisk/info: a changed startup_time means Asterisk restarted."""

    startup_time: str


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


def text_of(obj: dict, key: str, default: str | None = None) -> str:
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
    return Channel(
        id=text_of(obj, "id"),
        name=text_of(obj, "name"),
        state=text_of(obj, "state"),
        created=parse_time(obj.get("creationtime")),
        caller_number=text_of(caller, "number", ""),
        caller_name=text_of(caller, "name", ""),
        exten=text_of(dialplan, "exten", ""),
        dnid=dnid if isinstance(dnid := channelvars.get(DNID_VAR), str) else "",
        protocol_id=text_of(obj, "protocol_id", ""),
        linkedid=linkedid if isinstance(linkedid, str) and linkedid else None,
        presentation=PRESENTATIONS.get(pres) if isinstance(pres, str) else None,
    )


def parse_channels(answer: Any, source: str = "GET /channels") -> list[Channel]:
    """GET /channels: one malformed channel is logged and skipped, not the whole answer."""
    if not isinstance(answer, list):
        raise MalformedEvent(f"{source}: answer is not a list")
    channels = []
    for raw in answer:
        try:
            channels.append(parse_channel(raw))
        except MalformedEvent as exc:
            log.warning("%s: skipping a channel in GET /channels: %s", source, exc)
    return channels


def parse_info(answer: Any) -> AsteriskInfo:
    status = answer.get("status") if isinstance(answer, dict) else None
    startup = status.get("startup_time") if isinstance(status, dict) else None
    if not isinstance(startup, str):
        raise MalformedEvent("GET /asterisk/info: no status.startup_time")
    return AsteriskInfo(startup_time=startup)
