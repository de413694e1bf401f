"""Who a tool acts as: the system owner, or a person named with --as (no password)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from pbxcontrol.auth.authenticator import Caller
from pbxcontrol.db.models import Customer, Person, RolePrivilege
from pbxcontrol.ops import OpsError

# What the built-in "system owner" role may do (SPEC §5).
SYSTEM_PRIVILEGES = frozenset({"user", "telephone line reports", "callshop", "actions"})


def system_owner(conn: Connection) -> Caller:
    """The root customer of the tree, with no person: the operator holding the config. With
    nothing provisioned yet there is no root; customer=system still lists every leg."""
    root = conn.execute(
        select(Customer.id).where(Customer.parent_id.is_(None)).order_by(Customer.id).limit(1)
    ).scalar()
    return Caller("(system)", root or 0, "system owner", SYSTEM_PRIVILEGES, True)


def person(conn: Connection, username: str) -> Caller:
    """The person `username` as the API would see them after logging in."""
    rows = conn.execute(
        select(
            Person.customer_id,
            Person.role,
            Person.enabled,
            Customer.parent_id,
            RolePrivilege.privilege,
        )
        .join(Customer, Customer.id == Person.customer_id)
        .outerjoin(RolePrivilege, RolePrivilege.role == Person.role)
        .where(Person.username == username)
    ).all()
    if not rows:
        raise OpsError(f"--as: nobody is called {username!r}")
    row = rows[0]
    if not row.enabled:
        raise OpsError(f"--as: {username!r} is disabled: the API refuses them (401)")
    privileges = frozenset(r.privilege for r in rows if r.privilege)
    return Caller(username, row.customer_id, row.role, privileges, row.parent_id is None)
