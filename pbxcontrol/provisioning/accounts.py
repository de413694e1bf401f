"""Roles (their privileges replaced as a set) and people (passwords stored hashed)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from pbxcontrol.auth.passwords import hash_password, verify_password
from pbxcontrol.auth.tokens import new_epoch
from pbxcontrol.db.models import Base, Person, Role, RolePrivilege
from pbxcontrol.provisioning.bulk import Change
from pbxcontrol.provisioning.document import PersonRow, Rows


def apply_roles(conn: Connection, roles: dict[str, frozenset[str]], dry_run: bool) -> Change:
    """A listed role gets exactly the listed privileges."""
    change = Change()
    stored: dict[str, set[str]] = {name: set() for name in conn.scalars(select(Role.name))}
    for role, privilege in conn.execute(select(RolePrivilege.role, RolePrivilege.privilege)):
        stored[role].add(privilege)
    for name, privileges in roles.items():
        if name not in stored:
            change.inserted += 1
        elif stored[name] != privileges:
            change.updated += 1
        else:
            change.unchanged += 1
            continue
        if dry_run:
            continue
        if name not in stored:
            conn.execute(insert(Role).values(name=name))
        conn.execute(delete(RolePrivilege).where(RolePrivilege.role == name))
        if privileges:
            conn.execute(
                insert(RolePrivilege), [{"role": name, "privilege": p} for p in sorted(privileges)]
            )
    return change


def people_rows(conn: Connection, people: list[PersonRow]) -> Rows:
    """People as rows of the people table. Re-applying a document keeps the stored hash when
    the password is omitted or unchanged, so such a person compares equal (not rewritten).
    A new password or a change of `enabled` draws a new token epoch: their tokens die."""
    columns = ("username", "password_hash", "customer_id", "role", "enabled", "token_epoch")
    rows = Rows("people", Base.metadata.tables["people"], columns, ("username",))
    found = select(Person.username, Person.password_hash, Person.enabled, Person.token_epoch)
    stored = {r.username: r for r in conn.execute(found)}
    for p in people:
        old = stored.get(p.username)
        if old and (not p.password or verify_password(p.password, old.password_hash)):
            password_hash = old.password_hash
        else:
            password_hash = hash_password(p.password)
        if old and old.password_hash == password_hash and old.enabled == p.enabled:
            epoch = old.token_epoch
        else:
            epoch = new_epoch()
        rows.rows.append((p.username, password_hash, p.customer_id, p.role, p.enabled, epoch))
    return rows
