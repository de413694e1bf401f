"""Provisioning documents: validated whole, then upserted by natural key in one transaction."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from pbxcontrol.db.models import (
    Customer,
    CustomerTree,
    DirectoryEntry,
    Line,
    Number,
    Peer,
    Person,
    Role,
    RolePrivilege,
)
from pbxcontrol.passwords import hash_password, verify_password

PRIVILEGES = frozenset({"user", "telephone line reports", "callshop", "panel"})
SECTIONS = ("customers", "roles", "people", "lines", "peers", "numbers", "directory")
_ENDPOINT = re.compile(r"^[A-Za-z0-9_]+/[^\s/]+$")


class ProvisioningError(Exception):
    """The document is refused; the message names the item and field."""


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]

    def __str__(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.counts.items() if n) or "nothing"


def load_document(text: str | bytes) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProvisioningError("the document must be a JSON object of lists")
    for key in doc:
        if key not in SECTIONS:
            raise ProvisioningError(f"{key}: unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(doc[key], list):
            raise ProvisioningError(f"{key}: must be a list")
        for i, item in enumerate(doc[key]):
            if not isinstance(item, dict):
                raise ProvisioningError(f"{key}[{i}]: must be an object")
    return doc


class _Item:
    """Typed field access for one item, with errors naming list, index, key and field."""

    def __init__(self, section: str, index: int, data: dict[str, Any], fields: set[str]):
        self.where = f"{section}[{index}]"
        self.data = data
        for name in data:
            if name not in fields:
                self.fail(name, f"unknown field (known: {', '.join(sorted(fields))})")

    def fail(self, field: str, message: str):
        raise ProvisioningError(f"{self.where}.{field}: {message}")

    def _get(self, field: str, required: bool, default: Any) -> Any:
        if field not in self.data:
            if required:
                self.fail(field, "is required")
            return default
        return self.data[field]

    def int(
        self,
        field: str,
        *,
        required: bool = False,
        default: int | None = 0,
        nullable: bool = False,
        minimum: int = 0,
    ) -> int | None:
        value = self._get(field, required, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, not {json.dumps(value)}")
        if value < minimum:
            self.fail(field, f"must be at least {minimum}")
        return value

    def str(
        self,
        field: str,
        *,
        required: bool = False,
        default: str = "",
        nonempty: bool = False,
        max_len: int = 255,
    ) -> str:
        value = self._get(field, required, default)
        if not isinstance(value, str):
            self.fail(field, f"must be a string, not {json.dumps(value)}")
        if nonempty and not value.strip():
            self.fail(field, "must not be empty")
        if len(value) > max_len:
            self.fail(field, f"is longer than {max_len} characters")
        return value

    def bool(self, field: str, default: bool) -> bool:
        value = self._get(field, False, default)
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, not {json.dumps(value)}")
        return value


def _items(doc: dict, section: str, fields: set[str], key: Callable[[_Item], Any]):
    """Yield (item, natural key) pairs, refusing a key given twice in the document."""
    seen: dict[Any, int] = {}
    for i, data in enumerate(doc.get(section, [])):
        item = _Item(section, i, data, fields)
        k = key(item)
        if k in seen:
            raise ProvisioningError(
                f"{item.where}: duplicate key {k!r} (also {section}[{seen[k]}])"
            )
        seen[k] = i
        yield item, k


def apply(session: Session, doc: dict[str, Any]) -> Summary:
    """Validate the whole document against the database, then upsert it. Never commits."""
    plan = _validate(session, doc)
    for obj in plan:
        if hasattr(obj, "merge_into"):
            obj.merge_into(session)
        else:
            session.merge(obj)
        # Flush item by item: rows of one table reference each other (customer parents).
        session.flush()
    if "customers" in doc:
        rebuild_customer_tree(session)
    return Summary({s: len(doc.get(s, [])) for s in SECTIONS})


def _validate(session: Session, doc: dict[str, Any]) -> list[Any]:  # noqa: C901
    plan: list[Any] = []
    parents = dict(session.execute(select(Customer.id, Customer.parent_id)).all())
    db_roots = [c for c, p in parents.items() if p is None]
    new_customers: list[tuple[_Item, int]] = []
    for item, cid in _items(
        doc,
        "customers",
        {"id", "name", "parent", "max_calls"},
        lambda it: it.int("id", required=True, minimum=1),
    ):
        parent = item.int("parent", default=None, nullable=True, minimum=1)
        parents[cid] = parent
        new_customers.append((item, cid))
        plan.append(
            Customer(
                id=cid,
                parent_id=parent,
                name=item.str("name", required=True, nonempty=True),
                max_calls=item.int("max_calls", default=0),
            )
        )
    doc_roots = [cid for _, cid in new_customers if parents[cid] is None]
    root = (db_roots or doc_roots or [None])[0]
    plan.sort(key=lambda c: _depth(parents, c.id))
    for item, cid in new_customers:
        parent = parents[cid]
        if parent is not None and parent not in parents:
            item.fail("parent", f"unknown customer {parent}")
        if parent is None and cid != root:
            item.fail("parent", f"only one customer may be the root, and {root} is")
        seen, node = {cid}, parent
        while node is not None:
            if node in seen:
                item.fail("parent", f"makes a cycle in the customer tree through {node}")
            seen.add(node)
            node = parents.get(node)

    roles = set(session.scalars(select(Role.name)))
    for item, name in _items(
        doc,
        "roles",
        {"name", "privileges"},
        lambda it: it.str("name", required=True, nonempty=True, max_len=64),
    ):
        privs = item._get("privileges", True, None)
        if not isinstance(privs, list) or not all(isinstance(p, str) for p in privs):
            item.fail("privileges", "must be a list of strings")
        for p in privs:
            if p not in PRIVILEGES:
                item.fail(
                    "privileges",
                    f"unknown privilege {p!r} (known: {', '.join(sorted(PRIVILEGES))})",
                )
        roles.add(name)
        plan.append(Role(name=name))
        plan.append(_ReplacePrivileges(name, frozenset(privs)))

    def customer(item: _Item, field: str = "customer", nullable: bool = False) -> int | None:
        value = item.int(field, required=not nullable, default=None, nullable=nullable, minimum=1)
        if value is not None and value not in parents:
            item.fail(field, f"unknown customer {value}")
        return value

    existing_people = set(session.scalars(select(Person.username)))
    for item, username in _items(
        doc,
        "people",
        {"username", "password", "customer", "role", "enabled"},
        lambda it: it.str("username", required=True, nonempty=True, max_len=128),
    ):
        role = item.str("role", required=True, nonempty=True, max_len=64)
        if role not in roles:
            item.fail("role", f"unknown role {role!r}")
        password = item.str(
            "password", required=username not in existing_people, default="", max_len=1024
        )
        if username not in existing_people and not password:
            item.fail("password", "must not be empty")
        plan.append(
            _PersonUpsert(username, password, customer(item), role, item.bool("enabled", True))
        )

    peer_endpoints = dict(session.execute(select(Peer.endpoint, Peer.id)).all())
    line_endpoints = set(session.scalars(select(Line.endpoint)))
    for item, endpoint in _items(
        doc,
        "lines",
        {
            "endpoint",
            "customer",
            "number",
            "name",
            "callerid_internal",
            "callerid_external",
            "callername_internal",
            "callername_external",
        },
        lambda it: _endpoint(it),
    ):
        if endpoint in peer_endpoints:
            item.fail("endpoint", f"{endpoint} is already a peer")
        line_endpoints.add(endpoint)
        number = item.str("number", required=True, nonempty=True, max_len=64)
        plan.append(
            Line(
                endpoint=endpoint,
                customer_id=customer(item),
                number=number,
                name=item.str("name"),
                callerid_internal=item.str("callerid_internal", default=number, max_len=64),
                callerid_external=item.str("callerid_external", default=number, max_len=64),
                callername_internal=item.str("callername_internal", max_len=128),
                callername_external=item.str("callername_external", max_len=128),
            )
        )

    for item, pid in _items(
        doc,
        "peers",
        {"id", "endpoint", "name", "ingroup", "outgroup", "billing_peer"},
        lambda it: it.int("id", required=True, minimum=1),
    ):
        endpoint = _endpoint(item)
        if endpoint in line_endpoints:
            item.fail("endpoint", f"{endpoint} is already a telephone line")
        if peer_endpoints.get(endpoint, pid) != pid:
            item.fail("endpoint", f"{endpoint} belongs to peer {peer_endpoints[endpoint]}")
        peer_endpoints[endpoint] = pid
        plan.append(
            Peer(
                id=pid,
                endpoint=endpoint,
                name=item.str("name"),
                ingroup=item.int("ingroup"),
                outgroup=item.int("outgroup"),
                billing_peer=item.int("billing_peer"),
            )
        )

    for item, number in _items(
        doc,
        "numbers",
        {"number", "customer"},
        lambda it: it.str("number", required=True, nonempty=True, max_len=64),
    ):
        plan.append(Number(number=number, customer_id=customer(item)))

    for item, (cust, number) in _items(
        doc,
        "directory",
        {"customer", "number", "name"},
        lambda it: (
            customer(it, nullable=True),
            it.str("number", required=True, nonempty=True, max_len=64),
        ),
    ):
        plan.append(_DirectoryUpsert(cust, number, item.str("name", required=True)))
    return plan


def _depth(parents: dict[int, int | None], cid: int) -> int:
    depth, node, seen = 0, parents.get(cid), {cid}
    while node is not None and node not in seen:  # cycles are refused afterwards
        seen.add(node)
        depth, node = depth + 1, parents.get(node)
    return depth


def _endpoint(item: _Item) -> str:
    endpoint = item.str("endpoint", required=True, nonempty=True, max_len=128)
    if not _ENDPOINT.match(endpoint):
        item.fail("endpoint", f"{endpoint!r} is not TECH/resource (e.g. PJSIP/alice)")
    return endpoint


@dataclass(frozen=True)
class _ReplacePrivileges:
    role: str
    privileges: frozenset[str]

    def merge_into(self, session: Session) -> None:
        session.execute(delete(RolePrivilege).where(RolePrivilege.role == self.role))
        for p in sorted(self.privileges):
            session.add(RolePrivilege(role=self.role, privilege=p))


@dataclass(frozen=True)
class _PersonUpsert:
    username: str
    password: str
    customer_id: int
    role: str
    enabled: bool

    def merge_into(self, session: Session) -> None:
        person = session.get(Person, self.username)
        if person is None:
            person = Person(username=self.username)
            session.add(person)
        # Re-applying a document keeps the stored hash when the password is unchanged.
        if self.password and not (
            person.password_hash and verify_password(self.password, person.password_hash)
        ):
            person.password_hash = hash_password(self.password)
        person.customer_id, person.role, person.enabled = self.customer_id, self.role, self.enabled


@dataclass(frozen=True)
class _DirectoryUpsert:
    customer_id: int | None
    number: str
    name: str

    def merge_into(self, session: Session) -> None:
        # NULL never equals NULL in a unique constraint, so global entries are matched here.
        entry = session.scalars(
            select(DirectoryEntry).where(
                DirectoryEntry.number == self.number,
                DirectoryEntry.customer_id.is_(None)
                if self.customer_id is None
                else DirectoryEntry.customer_id == self.customer_id,
            )
        ).first()
        if entry is None:
            session.add(
                DirectoryEntry(customer_id=self.customer_id, number=self.number, name=self.name)
            )
        else:
            entry.name = self.name


def rebuild_customer_tree(session: Session) -> None:
    """Recompute the closure table from customers.parent_id (validated to be a tree)."""
    session.flush()
    parents = dict(session.execute(select(Customer.id, Customer.parent_id)).all())
    rows = []
    for cid in parents:
        depth, node = 0, cid
        while node is not None:
            rows.append({"ancestor_id": node, "descendant_id": cid, "depth": depth})
            depth, node = depth + 1, parents[node]
    session.execute(delete(CustomerTree))
    if rows:
        session.execute(insert(CustomerTree), rows)
