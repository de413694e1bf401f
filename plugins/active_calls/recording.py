"""recording/recordings/start, stop and pause (SPEC §11.5, Enswitch 4.1 for start): record the
chosen side of a call, carried out by the recording process holding the machine's lease
(`ctx.control`, SPEC §11.2). `start` also unpauses a paused recording; `stop` ends and keeps
it. Audited and rate-limited with calls/hangup (one budget per person, SPEC §11.1).

403 unless the owning customer's policy has `record=1` (SPEC §11.7, inherited down the tree).
The leg is found as calls/redirect finds it (the list's own scope: a leg that does not exist
and one the person may not see get the same 404); it must be Up. Whether it is being recorded
is the holder's to say (409), from the sessions' rows it keeps (SPEC §11.2 item 5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, insert, select

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

from .hangup import NOT_FOUND, _message, _stored, check_rate
from .policy import check_panel, forbid, owner_of, policy_of
from .redirect import RedirectRequest, _target

legs_table, call_actions = tables.legs, tables.call_actions
#: `panel` acts only on calls of the lines the person owns (SPEC §11.1, policy.check_panel).
PRIVILEGES = frozenset({"actions", "panel"})
#: The API's function name -> (the holder's executor, the audit's action, the answer on 204).
FUNCTIONS = {
    "recording/recordings/start": ("record_start", "record_start", "Recording started."),
    "recording/recordings/stop": ("record_stop", "record_stop", "Recording stopped."),
    "recording/recordings/pause": ("record_pause", "record_pause", "Recording paused."),
}
MAX_LENGTH = 255


def parse(params: dict[str, str]) -> tuple[RedirectRequest, list[tuple[str, str]]]:
    """uniqueid (required), channel (1|2, default 1), machine; unknown parameters ignored."""
    errors: list[tuple[str, str]] = []
    uniqueid = params.get("uniqueid", "")
    if not uniqueid:
        errors.append(("uniqueid", "uniqueid is required"))
    elif len(uniqueid) > MAX_LENGTH or "\x00" in uniqueid:
        errors.append(("uniqueid", f"must be at most {MAX_LENGTH} characters, no NUL"))
    channel = params.get("channel", "1")
    if channel not in ("1", "2"):
        errors.append(("channel", "must be 1 (calling side) or 2 (called side)"))
    machine = None
    raw = params.get("machine", "")
    if raw:
        if raw.isdigit() and raw.isascii() and len(raw) <= 9:
            machine = int(raw)
        else:
            errors.append(("machine", "must be a machine ID (a whole number)"))
    side = int(channel) if channel in ("1", "2") else 1
    return RedirectRequest(uniqueid, "", "", side, machine), errors


class Recordings:
    """One of the three functions: one audit row and one log line per request."""

    def __init__(
        self,
        function: str,
        control: Control,
        per_minute: int,
        settings: dict[str, str],
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ):
        self.function = function
        self.executor, self.action, self.accepted = FUNCTIONS[function]
        self.control, self.per_minute, self.settings = control, per_minute, settings
        self.log, self.clock = log, clock

    def __call__(self, request: ApiRequest) -> Outcome:
        arrived, now = time.monotonic(), self.clock()
        wanted, errors = parse(request.params)
        audit: dict[str, Any] = {
            "at": now,
            "username": request.caller.username,
            "customer_id": request.caller.customer_id,
            "address": request.address[:64],
            "action": self.action,
            "uniqueid": _stored(request.params.get("uniqueid", "")),
            "machine": wanted.machine or 0,
        }
        try:
            if not PRIVILEGES & request.caller.privileges:  # permission outranks validation
                raise ApiError(402)
            if errors:
                raise ApiError(400, errors)
            check_rate(request.conn, request.caller.username, now, self.per_minute)
            machine, target, customer = _up_leg(request.conn, request.caller, wanted)
        except ApiError as err:
            outcome = Outcome(err.code, err.entries)
            refused = {"code": err.code, "message": _message(outcome), "legs": "[]"}
            request.conn.execute(insert(call_actions), audit | refused)
            self._log(request, wanted, [], outcome)
            return outcome
        params = self.settings | {"customer": str(customer)}
        intent = Intent(machine, self.executor, (target,), params)
        action_id, [result] = self.control.carry_out(ControlRequest(**audit), [intent], arrived)
        reached = result.legs or [[machine, target, "pending"]]
        if result.state in ("done", "claimed"):
            outcome = Outcome(204, [("", self.accepted)])
        elif result.code == 404:
            outcome = Outcome(404, [("uniqueid", NOT_FOUND)])
        elif result.code == 409:
            outcome = Outcome(409, [("uniqueid", result.message)])
        else:
            outcome = Outcome(503, [("", result.message)])
        self.control.complete(action_id, outcome.code, _message(outcome), reached)
        self._log(request, wanted, reached, outcome)
        return outcome

    def _log(
        self,
        request: ApiRequest,
        wanted: RedirectRequest,
        reached: list[list[object]],
        outcome: Outcome,
    ) -> None:
        self.log.log(
            logging.WARNING if outcome.code >= 500 else logging.INFO,
            "%s by %r (customer %d) from %s: uniqueid=%r channel=%d machine=%s legs=%s -> %d %s",
            *(self.function, request.caller.username, request.caller.customer_id),
            *(request.address or "-", _stored(wanted.uniqueid), wanted.channel),
            *(wanted.machine or "-", reached, outcome.code, _message(outcome)),
        )


def _up_leg(conn: Connection, caller: Caller, wanted: RedirectRequest) -> tuple[int, str, int]:
    """(machine, uniqueid, owning customer) of the side asked for, which must be Up (409);
    with `panel` alone, of a call involving a line the caller owns (402)."""
    machine, uniqueid = _target(conn, caller.customer_id, wanted)
    check_panel(conn, caller, machine, uniqueid)
    lg = legs_table.c
    row = conn.execute(
        select(lg.status, lg.scustomer, lg.dcustomer).where(
            lg.machine == machine, lg.uniqueid == uniqueid
        )
    ).first()
    if row is None:
        raise ApiError(404, [("uniqueid", NOT_FOUND)])
    if row.status != "Up":
        raise ApiError(409, [("uniqueid", f"the leg is {row.status}: it cannot be recorded")])
    owner = owner_of(conn, machine, uniqueid)  # SPEC §11.1: the line's, else s-, else dcustomer
    if not policy_of(conn, owner, "default").record:  # SPEC §11.7: record=1, inherited
        raise forbid()
    return machine, uniqueid, owner or row.scustomer or row.dcustomer
