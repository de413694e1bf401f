"""Who a tool acts as: the system owner, or a person named with --as (no password)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from pbxcontrol.auth.authenticator import Caller, caller_of, person_rows
from pbxcontrol.db.models import Customer
from pbxcontrol.ops import OpsError

# What the built-in "system owner" role may do (SPEC §5).
SYSTEM_PRIVILEGES = frozenset({"user", "telephone line reports", "callshop", "actions", "monitor"})


def system_owner(conn: Connection) -> Caller:
    """The root customer of the tree, with no person: the operator holding the config. With
    nothing provisioned yet there is no root; customer=system still lists every leg."""
    root = conn.execute(
        select(Customer.id).where(Customer.parent_id.is_(None)).order_by(Customer.id).limit(1)
    ).scalar()
    return Caller("(system)", root or 0, "system owner", SYSTEM_PRIVILEGES, True)


def person(conn: Connection, username: str) -> Caller:
    """The person `username` as the API would see them after logging in."""
    rows = person_rows(conn, username)
    if not rows:
        raise OpsError(f"--as: nobody is called {username!r}")
    if not rows[0].enabled:
        raise OpsError(f"--as: {username!r} is disabled: the API refuses them (401)")
    return caller_of(username, rows)
