"""calls/hangup: end a call (every leg) or one leg, audited and rate-limited; carried out by the
recording process that holds each machine's lease (SPEC §11.2, `ctx.control`): this process
needs no ARI settings. The audit row is written first, as the intent, and completed with the
answer; a request refused before that (400, 404, 429) is audited in its own transaction.

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

from sqlalchemy import Connection, bindparam, func, insert, select

from pbxcontrol.plugin import (
    ApiError,
    ApiRequest,
    Caller,
    Control,
    ControlRequest,
    Intent,
    Outcome,
    tables,
)

from . import query
from .policy import check_panel

call_actions = tables.call_actions
#: `panel` acts only on calls of the lines the person owns (SPEC §11.1, policy.check_panel).
PRIVILEGES = frozenset({"actions", "panel"})
NOT_FOUND = "Call does not exist, or you do not have permission to view it"
ACCEPTED = "Hangup accepted; the legs leave the list within a second."
WINDOW = 60.0  # seconds: the rate limit is per minute
MAX_LENGTH = 255
_MACHINE = re.compile(r"[0-9]{1,9}")


def machine_param(params: dict[str, str], errors: list[tuple[str, str]]) -> int | None:
    """The optional `machine` of a control function (SPEC §11.1): None when not given; a
    keyed error in `errors` when it is not a machine ID."""
    raw = params.get("machine", "")
    if not raw:
        return None
    if _MACHINE.fullmatch(raw):
        return int(raw)
    errors.append(("machine", "must be a machine ID (a whole number)"))
    return None


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
    machine = machine_param(params, errors)
    return HangupRequest(callid, uniqueid, machine), errors


class Hangups:
    """The calls/hangup function: one audit row and one log line per request."""

    def __init__(
        self,
        control: Control,
        per_minute: int,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ):
        self.control = control
        self.per_minute = per_minute  # 0 = no limit
        self.log = log
        self.clock = clock  # wall-clock seconds: shared by processes and hosts

    def __call__(self, request: ApiRequest) -> Outcome:
        arrived, now = time.monotonic(), self.clock()
        wanted, errors = parse(request.params)
        try:
            if not PRIVILEGES & request.caller.privileges:  # permission outranks validation
                raise ApiError(402)
            if errors:
                raise ApiError(400, errors)
            check_rate(request.conn, request.caller.username, now, self.per_minute)
            legs = _targets(request.conn, request.caller, wanted)
        except ApiError as err:
            outcome = Outcome(err.code, err.entries)
            self._log(request, wanted, [], outcome)
            refused = {"code": outcome.code, "message": _message(outcome), "legs": "[]"}
            request.conn.execute(insert(call_actions), self._audit(request, wanted, now) | refused)
            return outcome
        by_machine: dict[int, list[str]] = {}
        for leg in legs:
            by_machine.setdefault(leg.machine, []).append(leg.uniqueid)
        intents = [Intent(m, "hangup", tuple(uids)) for m, uids in sorted(by_machine.items())]
        audit = ControlRequest(**self._audit(request, wanted, now))
        action_id, outcomes = self.control.carry_out(audit, intents, arrived)
        reached: list[list[object]] = []
        failures: list[str] = []
        for intent, result in zip(intents, outcomes, strict=True):
            if result.legs:
                reached += result.legs
            else:
                what = "pending" if result.state == "claimed" else "not tried"
                reached += [[intent.machine, uid, what] for uid in intent.targets]
            if result.state not in ("done", "claimed"):
                failures.append(result.message)
        outcome = (
            Outcome(503, [("", message) for message in failures])
            if failures
            else Outcome(204, [("", ACCEPTED)])
        )
        self.control.complete(action_id, outcome.code, _message(outcome), reached)
        self._log(request, wanted, reached, outcome)
        return outcome

    def _audit(self, request: ApiRequest, wanted: HangupRequest, now: float) -> dict:
        """The audit row's fields as asked (the outcome is added by whoever writes it)."""
        return {
            "at": now,
            "username": request.caller.username,
            "customer_id": request.caller.customer_id,
            "address": request.address[:64],
            "action": "hangup",
            "callid": _stored(request.params.get("callid", "")),
            "uniqueid": _stored(request.params.get("uniqueid", "")),
            "machine": wanted.machine or 0,
        }

    def _log(
        self,
        request: ApiRequest,
        wanted: HangupRequest,
        reached: list[list[object]],
        outcome: Outcome,
    ) -> None:
        caller = request.caller
        level = logging.WARNING if outcome.code >= 500 else logging.INFO
        self.log.log(
            level,
            "calls/hangup by %r (customer %d) from %s: callid=%r uniqueid=%r machine=%s "
            "legs=%s -> %d %s",
            caller.username,
            caller.customer_id,
            request.address or "-",
            _stored(request.params.get("callid", "")),
            _stored(request.params.get("uniqueid", "")),
            wanted.machine or "-",
            reached,
            outcome.code,
            _message(outcome),
        )


def check_rate(conn: Connection, username: str, now: float, per_minute: int) -> None:
    """SPEC §9/§11.1: one budget per person for every control function (the audit's rows of
    the last minute that were not themselves refused for the rate)."""
    if per_minute <= 0:
        return
    recent = conn.execute(_RECENT, {"username": username, "since": now - WINDOW}).scalar()
    if (recent or 0) >= per_minute:
        message = f"Too many call-control actions: at most {per_minute} a minute; retry later."
        raise ApiError(429, [("", message)])


def _message(outcome: Outcome) -> str:
    return "; ".join(text for _, text in outcome.entries)


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
    for leg in legs:
        check_panel(conn, caller, leg.machine, leg.uniqueid)
    return legs


def _stored(value: str) -> str:
    """What was asked, as a column can hold it (PostgreSQL refuses NUL)."""
    return value.replace("\x00", "\\0")[:MAX_LENGTH]
