"""Who may act on a leg beyond seeing it, and the owning customer's call-control policy
(SPEC §11.1, §11.7). `actions` acts on any leg the person may see; `panel` only on calls that
involve a telephone line the person owns (`lines.owner`). The policy is that of the customer
owning the target leg (the line's customer for a phone leg, else `scustomer`, else `dcustomer`),
each field taken from the nearest customer up the tree that sets it, else the root default."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, exists, select

from pbxcontrol.plugin import ApiError, Caller, tables

legs, lines = tables.legs, tables.lines
customers, tree = tables.customers, tables.customer_tree
#: Monitoring modes, weakest first: a policy allows its own mode and every weaker one.
MODES = ("none", "listen", "whisper", "barge")
NOT_OWN = "Your role acts only on calls of telephone lines you own."
FORBIDDEN = "Your rate plan does not allow this."


@dataclass(frozen=True)
class Policy:
    customer: int
    monitor: str = "none"
    monitor_announce: int = 0
    record: int = 0
    context: str = "default"

    def allows_mode(self, mode: str) -> bool:
        return MODES.index(mode) <= MODES.index(self.monitor)


def check_panel(conn: Connection, caller: Caller, machine: int, uniqueid: str) -> None:
    """402 unless the caller holds `actions`, or `panel` and the leg's call involves a line
    they own (the caller could already see the leg: the scope was checked before)."""
    if "actions" in caller.privileges:
        return
    if "panel" not in caller.privileges or not involves_own_line(
        conn, caller.username, machine, uniqueid
    ):
        raise ApiError(402, [("", NOT_OWN)])


def involves_own_line(conn: Connection, username: str, machine: int, uniqueid: str) -> bool:
    lg = legs.c
    call = select(lg.callid).where(lg.machine == machine, lg.uniqueid == uniqueid)
    owned = select(lines.c.endpoint).where(lines.c.owner == username)
    query = exists().where(
        and_(
            lg.machine == machine,
            lg.callid == call.scalar_subquery(),
            lg.endpoint.in_(owned),
        )
    )
    return bool(conn.execute(select(query)).scalar())


def owner_of(conn: Connection, machine: int, uniqueid: str) -> int:
    """The customer owning the leg: its line's for a phone leg, else scustomer, else
    dcustomer (0 when none is known)."""
    lg = legs.c
    row = conn.execute(
        select(lines.c.customer_id, lg.scustomer, lg.dcustomer)
        .select_from(legs.outerjoin(lines, lines.c.endpoint == lg.endpoint))
        .where(lg.machine == machine, lg.uniqueid == uniqueid)
    ).first()
    if row is None:
        return 0
    return int(row[0] or row[1] or row[2] or 0)


def policy_of(conn: Connection, customer: int, default_context: str) -> Policy:
    """The customer's effective policy: each field from the nearest customer (itself first)
    that sets it, else the root default (SPEC §11.7)."""
    c = customers.c
    rows = conn.execute(
        select(c.monitor, c.monitor_announce, c.record, c.context)
        .join(tree, tree.c.ancestor_id == c.id)
        .where(tree.c.descendant_id == customer)
        .order_by(tree.c.depth)
    ).all()
    found: list[object] = [None, None, None, None]
    for row in rows:
        found = [mine if mine is not None else row[i] for i, mine in enumerate(found)]
    monitor, announce, record, context = found
    return Policy(
        customer,
        str(monitor) if monitor is not None else "none",
        int(str(announce)) if announce is not None else 0,
        int(str(record)) if record is not None else 0,
        str(context) if context is not None else default_context,
    )


def forbid(key: str = "") -> ApiError:
    """403: the owning customer's policy forbids it (Enswitch's wording)."""
    return ApiError(403, [(key, FORBIDDEN)])
