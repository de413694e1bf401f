"""calls/hangup: end a call (every leg) or one leg through ARI, audited and rate-limited.

Who may act on a leg is decided by the list's own scope code (`query.targets`): a person acts
on what `calls/active/list` with `recursive=1` shows them. A leg that does not exist and one
they may not see get the same 404 from the same statement.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, bindparam, func, insert, select

from pbxcontrol.plugin import (
    ApiError,
    ApiRequest,
    Caller,
    Channels,
    ChannelsUnavailable,
    Outcome,
    tables,
)

from . import query

call_actions = tables.call_actions
PRIVILEGES = frozenset({"actions"})
NOT_FOUND = "Call does not exist, or you do not have permission to view it"
ACCEPTED = "Hangup accepted; the legs leave the list within a second."
WINDOW = 60.0  # seconds: the rate limit is per minute
MAX_LENGTH = 255
_MACHINE = re.compile(r"[0-9]{1,9}")

# Requests of this person in the window that the limiter let through (refusals do not count,
# so a client that keeps knocking is let in again once the window passes).
_RECENT = select(func.count()).where(
    call_actions.c.username == bindparam("username"),
    call_actions.c.at > bindparam("since"),
    call_actions.c.code != 429,
)


@dataclass(frozen=True)
class HangupRequest:
    callid: str = ""
    uniqueid: str = ""
    machine: int | None = None


@dataclass
class Leg:
    machine: int
    uniqueid: str
    result: str = "not tried"  # "hung up", "already ended", "failed"


def parse(params: dict[str, str]) -> tuple[HangupRequest, list[tuple[str, str]]]:
    """The request and its (parameter, message) errors; unknown parameters are ignored."""
    errors: list[tuple[str, str]] = []
    texts = {}
    for name in ("callid", "uniqueid"):
        value = params.get(name, "")
        if len(value) > MAX_LENGTH:
            errors.append((name, f"must be at most {MAX_LENGTH} characters"))
        elif "\x00" in value:
            errors.append((name, "must not contain NUL characters"))
        texts[name] = value
    callid, uniqueid = texts["callid"], texts["uniqueid"]
    if not errors and bool(callid) == bool(uniqueid):
        message = "give callid or uniqueid, not both" if callid else "callid or uniqueid needed"
        errors += [("callid", message), ("uniqueid", message)]
    machine = None
    raw = params.get("machine", "")
    if raw != "":
        if _MACHINE.fullmatch(raw):
            machine = int(raw)
        else:
            errors.append(("machine", "must be a machine ID (a whole number)"))
    return HangupRequest(callid, uniqueid, machine), errors


class Hangups:
    """The calls/hangup function: one audit row and one log line per request."""

    def __init__(
        self,
        channels: Channels,
        per_minute: int,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ):
        self.channels = channels
        self.per_minute = per_minute  # 0 = no limit
        self.log = log
        self.clock = clock  # wall-clock seconds: shared by processes and hosts

    def __call__(self, request: ApiRequest) -> Outcome:
        now = self.clock()
        wanted, errors = parse(request.params)
        legs: list[Leg] = []
        try:
            if errors:
                raise ApiError(400, errors)
            self._check_rate(request.conn, request.caller.username, now)
            legs = _targets(request.conn, request.caller, wanted)
            self._hang_up(legs)
            outcome = Outcome(204, [("", ACCEPTED)])
        except ApiError as err:
            outcome = Outcome(err.code, err.entries)
        self._record(request, wanted, legs, outcome, now)
        return outcome

    def _check_rate(self, conn: Connection, username: str, now: float) -> None:
        if self.per_minute <= 0:
            return
        recent = conn.execute(_RECENT, {"username": username, "since": now - WINDOW}).scalar()
        if (recent or 0) >= self.per_minute:
            message = f"Too many hangups: at most {self.per_minute} a minute; retry later."
            raise ApiError(429, [("", message)])

    def _hang_up(self, legs: list[Leg]) -> None:
        """Every leg, machine by machine; a machine that fails is not asked again."""
        for machine in sorted({leg.machine for leg in legs}):
            if not self.channels.reachable(machine):
                raise ApiError(
                    503, [("", f"machine {machine} is not reachable from this API host")]
                )
        failed: dict[int, str] = {}
        for leg in legs:
            if leg.machine in failed:
                continue
            try:
                gone = not self.channels.hang_up(leg.machine, leg.uniqueid)
            except ChannelsUnavailable as exc:
                failed[leg.machine] = str(exc)
                leg.result = "failed"
                continue
            leg.result = "already ended" if gone else "hung up"
        if failed:
            raise ApiError(503, [("", message) for message in failed.values()])

    def _record(
        self,
        request: ApiRequest,
        wanted: HangupRequest,
        legs: list[Leg],
        outcome: Outcome,
        now: float,
    ) -> None:
        """The log line, then the audit row (in the request's transaction, committed with
        the answer)."""
        caller = request.caller
        callid, uniqueid = (_stored(request.params.get(k, "")) for k in ("callid", "uniqueid"))
        message = "; ".join(text for _, text in outcome.entries)
        reached = [[leg.machine, leg.uniqueid, leg.result] for leg in legs]
        level = logging.WARNING if outcome.code >= 500 else logging.INFO
        self.log.log(
            level,
            "calls/hangup by %r (customer %d) from %s: callid=%r uniqueid=%r machine=%s "
            "legs=%s -> %d %s",
            caller.username,
            caller.customer_id,
            request.address or "-",
            callid,
            uniqueid,
            wanted.machine or "-",
            reached,
            outcome.code,
            message,
        )
        request.conn.execute(
            insert(call_actions),
            {
                "at": now,
                "username": caller.username,
                "customer_id": caller.customer_id,
                "address": request.address[:64],
                "action": "hangup",
                "callid": callid,
                "uniqueid": uniqueid,
                "machine": wanted.machine or 0,
                "legs": orjson.dumps(reached).decode(),
                "code": outcome.code,
                "message": message,
            },
        )


def _targets(conn: Connection, caller: Caller, wanted: HangupRequest) -> list[Leg]:
    statement = query.targets(bool(wanted.callid), wanted.machine is not None)
    values: dict[str, object] = {"scope": caller.customer_id}
    if wanted.callid:
        values["callid"] = wanted.callid
    else:
        values["uniqueid"] = wanted.uniqueid
    if wanted.machine is not None:
        values["machine"] = wanted.machine
    legs = [Leg(machine, uniqueid) for machine, uniqueid in conn.execute(statement, values)]
    if not legs:
        raise ApiError(404, [("callid" if wanted.callid else "uniqueid", NOT_FOUND)])
    return legs


def _stored(value: str) -> str:
    """What was asked, as a column can hold it (PostgreSQL refuses NUL)."""
    return value.replace("\x00", "\\0")[:MAX_LENGTH]
