"""calls/make (SPEC §11.4, Enswitch's click-to-call): ring party 1 (a telephone line, or a number
through the customer's dialling context) and, once it answers, the second party — carried out
by the recording process holding the machine's lease (`ctx.control`, SPEC §11.2), which
originates party 1 into the shipped `[pbxcontrol-make]` context with the `PBX_*` variables that
file the call under the customer from its first events. With `delay`, the intent is scheduled
(answered `204` at once) and the holder of the lease when it is due rings party 1. Audited and
rate-limited with the other control functions (one budget per person)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

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

from .hangup import _message, check_rate
from .policy import policy_of

lines, tree, machines = tables.lines, tables.customer_tree, tables.machines
call_actions = tables.call_actions
PRIVILEGES = frozenset({"actions", "panel"})
ACCEPTED = "Call accepted; the first party is ringing."
SCHEDULED = "Call scheduled; the first party rings in {delay} s."
_NUMBER = re.compile(r"[0-9*#+]{1,64}")
_CTYPE = re.compile(r"[a-z]{0,32}")
_CALLERID = re.compile(r"[0-9*#+]{0,64}")
_WHOLE = re.compile(r"[0-9]{1,9}")
MAX_DELAY = 3600
#: Enswitch parameters accepted and ignored (screening, warnings), and those whose only
#: supported value is their default (calling cards, record groups, another dialplan).
IGNORED = ("screen1", "screen2", "warn1", "warn2")
UNSUPPORTED = ("card", "recordgroup", "cdialplan")


@dataclass
class MakeRequest:
    stype: str = ""
    snumber: str = ""
    ctype: str = ""
    cnumber: str = ""
    customer: int | None = None
    callerid1: str = ""
    callerid2: str = ""
    answer1: bool = False
    answer2: bool = False
    delay: int = 0
    wait: bool = False
    machine: int | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)


def parse(params: dict[str, str]) -> MakeRequest:
    """The request, with its (parameter, message) errors; unknown parameters are ignored."""
    r = MakeRequest()
    r.stype = params.get("stype", "")
    if r.stype not in ("", "phone"):
        r.errors.append(("stype", 'must be "phone" or "" (a number)'))
    r.snumber, r.cnumber = params.get("snumber", ""), params.get("cnumber", "")
    if not _NUMBER.fullmatch(r.snumber):
        r.errors.append(("snumber", "Invalid calling number specified."))
    if not _NUMBER.fullmatch(r.cnumber):
        r.errors.append(("cnumber", "Invalid called number specified."))
    r.ctype = params.get("ctype", "")
    if not _CTYPE.fullmatch(r.ctype):
        r.errors.append(("ctype", "must be a call type: lowercase letters (or empty)"))
    r.callerid1, r.callerid2 = params.get("callerid1", ""), params.get("callerid2", "")
    for key, value in (("callerid1", r.callerid1), ("callerid2", r.callerid2)):
        if not _CALLERID.fullmatch(value):
            r.errors.append((key, "must be a number (digits, *, #, +) or empty"))
    r.answer1, r.answer2 = _flag(r, params, "answer1"), _flag(r, params, "answer2")
    r.wait = _flag(r, params, "wait")
    r.customer = _whole(r, params, "customer")
    r.machine = _whole(r, params, "machine")
    r.delay = _whole(r, params, "delay") or 0
    if r.delay > MAX_DELAY:
        r.errors.append(("delay", f"must be at most {MAX_DELAY} seconds"))
    for key in UNSUPPORTED:
        if params.get(key, "") not in ("", "0"):
            r.errors.append((key, "is not supported"))
    return r


def _flag(r: MakeRequest, params: dict[str, str], key: str) -> bool:
    value = params.get(key, "0") or "0"
    if value not in ("0", "1"):
        r.errors.append((key, "must be 0 or 1"))
    return value == "1"


def _whole(r: MakeRequest, params: dict[str, str], key: str) -> int | None:
    raw = params.get(key, "")
    if raw == "":
        return None
    if not _WHOLE.fullmatch(raw):
        r.errors.append((key, "must be a whole number"))
        return None
    return int(raw)


@dataclass(frozen=True)
class Party1:
    endpoint: str  # what Asterisk dials first
    customer: int  # who the call is filed under (PBX_SCUSTOMER)
    context: str  # the customer's dialling context, where party 2 is dialled
    machine: int


class Makes:
    """The calls/make function: one audit row and one log line per request."""

    def __init__(
        self,
        control: Control,
        per_minute: int,
        context: str,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ):
        self.control, self.per_minute, self.context = control, per_minute, context
        self.log, self.clock = log, clock

    def __call__(self, request: ApiRequest) -> Outcome | dict[str, Any]:
        arrived, now = time.monotonic(), self.clock()
        wanted = parse(request.params)
        audit: dict[str, Any] = {
            "at": now,
            "username": request.caller.username,
            "customer_id": request.caller.customer_id,
            "address": request.address[:64],
            "action": "make",
            "machine": wanted.machine or 0,
        }
        try:
            if wanted.errors:
                raise ApiError(400, wanted.errors)
            check_rate(request.conn, request.caller.username, now, self.per_minute)
            party1 = _party1(request.conn, request.caller, wanted, self.context)
        except ApiError as err:
            outcome = Outcome(err.code, err.entries)
            refused = {"code": err.code, "message": _message(outcome), "legs": "[]"}
            request.conn.execute(call_actions.insert(), audit | refused)
            self._log(request, wanted, outcome)
            return outcome
        audit["machine"] = party1.machine
        params = _params(wanted, party1)
        # With `delay`, a scheduled intent: the holder of the lease when it is due runs it.
        intent = Intent(party1.machine, "make", (), params, delay=wanted.delay)
        action_id, [result] = self.control.carry_out(ControlRequest(**audit), [intent], arrived)
        reached = result.legs or [[party1.machine, "", result.state]]
        data: dict[str, Any] | None = None
        if result.state == "scheduled":  # no call yet, hence no ids even with wait=1
            outcome = Outcome(204, [("", SCHEDULED.format(delay=wanted.delay))])
        elif result.state == "done":
            uniqueid = result.created.get("party1", "")
            data = {"machine": party1.machine, "callid": uniqueid, "uniqueid": uniqueid}
            outcome = Outcome(200 if wanted.wait else 204, [("", ACCEPTED)])
        elif result.state == "claimed":  # asynchronous: Enswitch's "may take a second or two"
            outcome = Outcome(204, [("", ACCEPTED)])
        else:
            outcome = Outcome(503, [("", result.message)])
        self.control.complete(action_id, outcome.code, _message(outcome), reached)
        self._log(request, wanted, outcome)
        # With wait=1 the ids are known at once: the holder chose them (SPEC §11.4).
        return data if wanted.wait and data is not None else outcome

    def _log(self, request: ApiRequest, wanted: MakeRequest, outcome: Outcome) -> None:
        self.log.log(
            logging.WARNING if outcome.code >= 500 else logging.INFO,
            "calls/make by %r (customer %d) from %s: stype=%r snumber=%r ctype=%r cnumber=%r "
            "machine=%s -> %d %s",
            *(request.caller.username, request.caller.customer_id, request.address or "-"),
            *(wanted.stype, wanted.snumber, wanted.ctype, wanted.cnumber),
            *(wanted.machine or "-", outcome.code, _message(outcome)),
        )


def _params(wanted: MakeRequest, party1: Party1) -> dict[str, str]:
    """What the holder needs (recorder/make.py), as the intent's parameters."""
    return {
        "endpoint": party1.endpoint,
        "customer": str(party1.customer),
        "context": party1.context,
        "stype": wanted.stype,
        "snumber": wanted.snumber,
        "ctype": wanted.ctype,
        "cnumber": wanted.cnumber,
        "callerid1": wanted.callerid1,
        "callerid2": wanted.callerid2 or wanted.snumber,
        "answer1": "1" if wanted.answer1 else "0",
        "answer2": "1" if wanted.answer2 else "0",
    }


def _party1(conn: Connection, caller: Caller, wanted: MakeRequest, default: str) -> Party1:
    """What to ring first, for whom, on which machine; 400 by key otherwise."""
    customer = caller.customer_id if wanted.customer is None else wanted.customer
    mine = select(tree.c.descendant_id).where(tree.c.ancestor_id == caller.customer_id)
    if customer not in set(conn.execute(mine).scalars()):
        raise ApiError(400, [("customer", "must be your customer or one under it")])
    panel_only = "actions" not in caller.privileges
    line_machine = None
    if wanted.stype == "phone":
        c = lines.c
        found = conn.execute(
            select(c.endpoint, c.customer_id, c.machine, c.owner)
            .join(tree, tree.c.descendant_id == c.customer_id)
            .where(tree.c.ancestor_id == customer, c.number == wanted.snumber)
            .order_by(c.endpoint)
        ).all()
        if panel_only:
            found = [row for row in found if row.owner == caller.username]
        if len(found) != 1:
            what = "no telephone line" if not found else "several telephone lines"
            mine_only = " of yours" if panel_only else ""
            raise ApiError(400, [("snumber", f"{what}{mine_only} with this number")])
        endpoint, customer, line_machine = found[0].endpoint, found[0].customer_id, found[0].machine
    elif panel_only:
        raise ApiError(400, [("snumber", "must be a telephone line you own (stype=phone)")])
    context = policy_of(conn, customer, default).context  # the owning customer's (§11.7)
    if wanted.stype != "phone":
        endpoint = f"Local/{wanted.snumber}@{context}"
    return Party1(endpoint, customer, context, _machine(conn, wanted.machine or line_machine))


def _machine(conn: Connection, asked: int | None) -> int:
    known = sorted(conn.execute(select(machines.c.id)).scalars())
    if asked is not None:
        if asked not in known:
            raise ApiError(400, [("machine", f"unknown machine {asked}")])
        return asked
    if len(known) != 1:
        raise ApiError(400, [("machine", "several machines: give one (or the line's machine)")])
    return known[0]
