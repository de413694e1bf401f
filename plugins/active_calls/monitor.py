"""calls/monitor (SPEC §11.6): a supervisor listens to a call, whispers to one side of it, or
barges in — carried out by the recording process holding the machine's lease (`ctx.control`,
SPEC §11.2), which rings the supervisor's phone into the shipped `[pbxcontrol-monitor]` context
(Asterisk's ChanSpy on the chosen leg: see recorder/monitor.py for why not an ARI snoop). Needs
the `monitor` privilege; the owning customer's policy sets the strongest mode (SPEC §11.7).
Audited and rate-limited with calls/hangup (one budget per person)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, or_, select

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

from .hangup import MAX_LENGTH, _message, _stored, check_rate, machine_param
from .policy import MODES, forbid, owner_of, policy_of
from .redirect import RedirectRequest, _target

legs, lines, tree = tables.legs, tables.lines, tables.customer_tree
call_actions = tables.call_actions
PRIVILEGES = frozenset({"monitor"})
#: What the core checks: any privilege. The 402 for lacking `monitor` is ours, after the audit
#: row is begun, so that a refused request is audited too (SPEC §11.1).
ANY = frozenset({"*"})
_PHONE = re.compile(r"[A-Za-z0-9_/@.+*#-]{1,128}")


def parse(params: dict[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The request's values and its (parameter, message) errors."""
    errors: list[tuple[str, str]] = []
    uniqueid = params.get("uniqueid", "")
    if not uniqueid or len(uniqueid) > MAX_LENGTH or "\x00" in uniqueid:
        errors.append(("uniqueid", f"uniqueid is required (at most {MAX_LENGTH} characters)"))
    channel = params.get("channel", "1")
    if channel not in ("1", "2"):
        errors.append(("channel", "must be 1 (calling side) or 2 (called side)"))
    mode = params.get("mode", "listen") or "listen"
    if mode not in MODES[1:]:
        errors.append(("mode", "must be listen, whisper or barge"))
    phone = params.get("phone", "")
    if not _PHONE.fullmatch(phone):
        errors.append(("phone", "required: the endpoint or number of your telephone line"))
    answer = params.get("answer", "0") or "0"
    if answer not in ("0", "1"):
        errors.append(("answer", "must be 0 or 1"))
    machine = machine_param(params, errors)
    side = int(channel) if channel in ("1", "2") else 1
    wanted = dict(uniqueid=uniqueid, channel=side, mode=mode, phone=phone, answer=answer == "1")
    return wanted | {"machine": machine}, errors


class Monitors:
    """The calls/monitor function: one audit row and one log line per request."""

    def __init__(
        self,
        control: Control,
        per_minute: int,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ):
        self.control, self.per_minute, self.log, self.clock = control, per_minute, log, clock

    def __call__(self, request: ApiRequest) -> Outcome | dict[str, Any]:
        arrived, now = time.monotonic(), self.clock()
        wanted, errors = parse(request.params)
        audit: dict[str, Any] = {
            "at": now,
            "username": request.caller.username,
            "customer_id": request.caller.customer_id,
            "address": request.address[:64],
            "action": "monitor",
            "uniqueid": _stored(request.params.get("uniqueid", "")),
            "machine": wanted["machine"] or 0,
        }
        try:
            if not PRIVILEGES & request.caller.privileges:  # permission outranks validation
                raise ApiError(402)
            if errors:
                raise ApiError(400, errors)
            check_rate(request.conn, request.caller.username, now, self.per_minute)
            machine, target, spy, announce = _monitored(request.conn, request.caller, wanted)
            supervisor = _supervisor_line(request.conn, request.caller, wanted["phone"])
            session = _session(request.conn, machine, target, supervisor[1], wanted["mode"])
        except ApiError as err:
            outcome = Outcome(err.code, err.entries)
            refused = {"code": err.code, "message": _message(outcome), "legs": "[]"}
            request.conn.execute(call_actions.insert(), audit | refused)
            self._log(request, wanted, outcome)
            return outcome
        endpoint, number, customer = supervisor
        params = {
            "endpoint": endpoint,
            "snumber": number,
            "customer": str(customer),
            "spy": spy,
            "mode": wanted["mode"],
            "answer": "1" if wanted["answer"] else "0",
            "announce": "1" if announce else "0",
        }
        if session:  # another mode for the live session: the holder moves it (204)
            params["session"] = session
        intent = Intent(machine, "monitor", (target,), params)
        action_id, [result] = self.control.carry_out(ControlRequest(**audit), [intent], arrived)
        reached = result.legs or [[machine, target, "pending"]]
        outcome, data = _answer(result, machine, wanted["mode"], changing=bool(session))
        self.control.complete(action_id, outcome.code, _message(outcome), reached)
        self._log(request, wanted, outcome)
        return data if data is not None else outcome

    def _log(self, request: ApiRequest, wanted: dict[str, Any], outcome: Outcome) -> None:
        self.log.log(
            logging.WARNING if outcome.code >= 500 else logging.INFO,
            "calls/monitor by %r (customer %d) from %s: uniqueid=%r channel=%s mode=%r "
            "phone=%r -> %d %s",
            *(request.caller.username, request.caller.customer_id, request.address or "-"),
            *(_stored(wanted["uniqueid"]), wanted["channel"], wanted["mode"], wanted["phone"]),
            *(outcome.code, _message(outcome)),
        )


def _answer(
    result: Any, machine: int, mode: str, changing: bool
) -> tuple[Outcome, dict[str, Any] | None]:
    """The holder's outcome as the answer: 200 with the supervisor's leg for a new session,
    204 for a mode change (or a claimed one, Enswitch's asynchronous answer)."""
    if result.state == "done" and not changing:
        data = {"machine": machine, "uniqueid": result.created.get("supervisor", "")}
        return Outcome(200, [("", "The supervisor's phone is ringing.")]), data
    if result.state == "done":
        return Outcome(204, [("", f"The session is now {mode}.")]), None
    if result.state == "claimed":
        return Outcome(204, [("", "Accepted; it takes effect shortly.")]), None
    if result.code == 404:
        return Outcome(404, [("uniqueid", result.message)]), None
    if result.code == 409:
        return Outcome(409, [("mode" if changing else "uniqueid", result.message)]), None
    return Outcome(503, [("", result.message)]), None


def _monitored(
    conn: Connection, caller: Caller, wanted: dict[str, Any]
) -> tuple[int, str, str, bool]:
    """(machine, uniqueid, channel name, announce) of the leg to spy on: visible (404
    otherwise), Up and a real leg (409), its customer's policy allowing the mode (403)."""
    ask = RedirectRequest(wanted["uniqueid"], "", "", wanted["channel"], wanted["machine"])
    machine, target = _target(conn, caller.customer_id, ask)
    lg = legs.c
    row = conn.execute(
        select(lg.channel, lg.status).where(lg.machine == machine, lg.uniqueid == target)
    ).one()
    if row.status != "Up":
        raise ApiError(409, [("uniqueid", f"the leg is {row.status}: it cannot be monitored")])
    if row.channel.startswith("pbxc-") or "/" not in row.channel:
        raise ApiError(409, [("uniqueid", "a control channel cannot be monitored")])
    policy = policy_of(conn, owner_of(conn, machine, target), "default")
    if not policy.allows_mode(wanted["mode"]):
        raise forbid("mode")
    return machine, target, row.channel, policy.monitor_announce == 1


def _supervisor_line(conn: Connection, caller: Caller, phone: str) -> tuple[str, str, int]:
    """(endpoint, number, customer) of the supervisor's line: one the person owns, or with
    `actions` any line of their subtree; 400 with key phone otherwise."""
    c = lines.c
    found = conn.execute(
        select(c.endpoint, c.number, c.customer_id, c.owner)
        .join(tree, tree.c.descendant_id == c.customer_id)
        .where(
            tree.c.ancestor_id == caller.customer_id, or_(c.endpoint == phone, c.number == phone)
        )
        .order_by(c.endpoint)
    ).all()
    if "actions" not in caller.privileges:
        found = [row for row in found if row.owner == caller.username]
    if len(found) != 1:
        what = "no telephone line of yours" if not found else "several telephone lines"
        raise ApiError(400, [("phone", f"{what} with this endpoint or number")])
    return found[0].endpoint, found[0].number, found[0].customer_id


def _session(conn: Connection, machine: int, target: str, number: str, mode: str) -> str:
    """The supervisor's leg of this line's live session on the leg (a leg with dtype
    `monitor`, dnumber the leg), "" when none: a request with another mode changes the
    session's; 409 when it already runs in this mode (`spying`, set as ChanSpy starts: while
    the phone still rings the holder answers instead)."""
    lg = legs.c
    already = conn.execute(
        select(lg.uniqueid, lg.spying).where(
            lg.machine == machine,
            lg.dtype == "monitor",
            lg.dnumber == target,
            lg.snumber == number,
        )
    ).first()
    if already is None:
        return ""
    if already.spying.partition("/")[0] == mode:
        raise ApiError(409, [("uniqueid", "the leg is already monitored by you")])
    return str(already.uniqueid)
