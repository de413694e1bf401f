"""calls/redirect (SPEC §11.3, Enswitch 3.13): send one side of a call to another number, carried
out by the recording process holding the machine's lease (`ctx.control`, SPEC §11.2): the leg
leaves its bridge (or its ringing Dial) and runs the dialling context at `cnumber`; the leg left
behind is released. Audited and rate-limited with calls/hangup (one budget per person).

Who may act on a leg is the list's own scope (`query.targets`), as for hang-up: a leg that does
not exist and one the person may not see get the same 404 from the same statement.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from pbxcontrol.plugin import (
    ApiError,
    ApiRequest,
    Control,
    ControlRequest,
    Intent,
    Outcome,
    tables,
)

from . import query
from .hangup import MAX_LENGTH, NOT_FOUND, _message, _stored, check_rate, machine_param
from .policy import check_panel, owner_of, policy_of

legs_table, call_actions = tables.legs, tables.call_actions
#: `panel` acts only on calls of the lines the person owns (SPEC §11.1, policy.check_panel).
PRIVILEGES = frozenset({"actions", "panel"})
ACCEPTED = "Redirect accepted; the leg runs the dialplan at the new number."
INVALID_NUMBER = "Invalid called number specified."
_NUMBER = re.compile(r"[0-9*#+]{1,64}")
_CTYPE = re.compile(r"[a-z]{0,32}")
#: A leg may be redirected while Up; the calling side also while it is still in the dialplan.
CALLING_STATES = frozenset({"Up", "Ring", "Ringing", "Down", "Dialing", "Pre-ring"})
CONTEXT = re.compile(r"[A-Za-z0-9_-]{1,79}")


@dataclass(frozen=True)
class RedirectRequest:
    uniqueid: str = ""
    ctype: str = ""
    cnumber: str = ""
    channel: int = 1
    machine: int | None = None


def parse(params: dict[str, str]) -> tuple[RedirectRequest, list[tuple[str, str]]]:
    """The request and its (parameter, message) errors; unknown parameters are ignored."""
    errors: list[tuple[str, str]] = []
    uniqueid = params.get("uniqueid", "")
    if not uniqueid:
        errors.append(("uniqueid", "uniqueid is required"))
    elif len(uniqueid) > MAX_LENGTH or "\x00" in uniqueid:
        errors.append(("uniqueid", f"must be at most {MAX_LENGTH} characters, no NUL"))
    cnumber = params.get("cnumber", "")
    if not _NUMBER.fullmatch(cnumber):
        errors.append(("cnumber", INVALID_NUMBER))
    ctype = params.get("ctype", "")
    if not _CTYPE.fullmatch(ctype):
        errors.append(("ctype", "must be a call type: lowercase letters (or empty)"))
    channel = params.get("channel", "1")
    if channel not in ("1", "2"):
        errors.append(("channel", "must be 1 (calling side) or 2 (called side)"))
    machine = machine_param(params, errors)
    side = int(channel) if channel in ("1", "2") else 1
    return RedirectRequest(uniqueid, ctype, cnumber, side, machine), errors


class Redirects:
    """The calls/redirect function: one audit row and one log line per request."""

    def __init__(
        self,
        control: Control,
        per_minute: int,
        context: str,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ):
        if not CONTEXT.fullmatch(context):
            raise ValueError(f"[plugin:active_calls] context: {context!r} is not a context name")
        self.control, self.per_minute, self.context = control, per_minute, context
        self.log, self.clock = log, clock

    def __call__(self, request: ApiRequest) -> Outcome:
        arrived, now = time.monotonic(), self.clock()
        wanted, errors = parse(request.params)
        audit: dict[str, Any] = {
            "at": now,
            "username": request.caller.username,
            "customer_id": request.caller.customer_id,
            "address": request.address[:64],
            "action": "redirect",
            "uniqueid": _stored(request.params.get("uniqueid", "")),
            "machine": wanted.machine or 0,
        }
        try:
            if not PRIVILEGES & request.caller.privileges:  # permission outranks validation
                raise ApiError(402)
            if errors:
                raise ApiError(400, errors)
            check_rate(request.conn, request.caller.username, now, self.per_minute)
            machine, target = _target(request.conn, request.caller.customer_id, wanted)
            check_panel(request.conn, request.caller, machine, target)
            # The dialling context is the owning customer's (SPEC §11.3, §11.7).
            owner = owner_of(request.conn, machine, target)
            context = policy_of(request.conn, owner, self.context).context
        except ApiError as err:
            outcome = Outcome(err.code, err.entries)
            refused = {"code": err.code, "message": _message(outcome), "legs": "[]"}
            request.conn.execute(insert(call_actions), audit | refused)
            self._log(request, wanted, [], outcome)
            return outcome
        params = {"context": context, "ctype": wanted.ctype, "cnumber": wanted.cnumber}
        intent = Intent(machine, "redirect", (target,), params)
        action_id, [result] = self.control.carry_out(ControlRequest(**audit), [intent], arrived)
        reached = result.legs or [[machine, target, "pending"]]
        if result.state in ("done", "claimed"):
            outcome = Outcome(204, [("", ACCEPTED)])
        elif result.code == 404:
            outcome = Outcome(404, [("uniqueid", NOT_FOUND)])
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
            "calls/redirect by %r (customer %d) from %s: uniqueid=%r channel=%d cnumber=%r "
            "ctype=%r machine=%s legs=%s -> %d %s",
            *(request.caller.username, request.caller.customer_id, request.address or "-"),
            *(_stored(wanted.uniqueid), wanted.channel, wanted.cnumber, wanted.ctype),
            *(wanted.machine or "-", reached, outcome.code, _message(outcome)),
        )


def _target(conn: Connection, scope: int, wanted: RedirectRequest) -> tuple[int, str]:
    """(machine, uniqueid) of the leg to redirect: the named leg's call, the side asked for
    (§11.1: Local channels are never acted on). 404 when the person may not see the leg, 409
    when the side has no leg or its state does not allow a redirect."""
    values: dict[str, object] = {"scope": scope, "uniqueid": wanted.uniqueid}
    if wanted.machine is not None:
        values["machine"] = wanted.machine
    found = conn.execute(query.targets(False, wanted.machine is not None), values).all()
    if not found:
        raise ApiError(404, [("uniqueid", NOT_FOUND)])
    if len(found) > 1:
        raise ApiError(400, [("machine", "the uniqueid is live on several machines: give one")])
    machine, uniqueid = found[0]
    lg = legs_table.c
    named = select(lg.callid).where(lg.machine == machine, lg.uniqueid == uniqueid)
    rows = conn.execute(
        select(lg.uniqueid, lg.channel, lg.status, lg.callid)
        .where(lg.machine == machine, lg.callid == named.scalar_subquery())
        .order_by(lg.start, lg.id)
    ).all()
    real = [r for r in rows if not r.channel.startswith("Local/")]
    calling = next((r for r in real if r.uniqueid == r.callid), real[0] if real else None)
    if wanted.channel == 1:
        side, states = calling, CALLING_STATES
    else:
        called = [r for r in real if calling is None or r.uniqueid != calling.uniqueid]
        side, states = next((r for r in called if r.status == "Up"), None), frozenset({"Up"})
    if side is None:
        raise ApiError(409, [("channel", "the call has no leg on that side")])
    if side.status not in states:
        raise ApiError(409, [("uniqueid", f"the leg is {side.status}: it cannot be redirected")])
    return machine, side.uniqueid
