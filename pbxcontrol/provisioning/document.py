"""A whole document checked against the database and turned into a Plan of typed rows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from pbxcontrol.db.models import Base, Customer, Line, Peer, Person, Role
from pbxcontrol.provisioning.fields import Item, items

PRIVILEGES = frozenset(
    {"user", "telephone line reports", "callshop", "panel", "actions", "monitor"}
)
#: Call-control policy (SPEC §11.7): absent or null = inherited from the parent customer.
MONITOR_MODES = ("none", "listen", "whisper", "barge")
POLICY_FIELDS = ("monitor", "monitor_announce", "record", "context")
_CONTEXT = re.compile(r"^[A-Za-z0-9_-]{1,79}$")
_ENDPOINT = re.compile(r"^[A-Za-z0-9_]+/[^\s/]+$")
LINE_FIELDS = (
    "name",
    "callerid_internal",
    "callerid_external",
    "callername_internal",
    "callername_external",
)


@dataclass
class Rows:
    """One list of the document as rows of one table; `key` is the natural key (the conflict
    target). A key column listed in `nullable` may be NULL: those rows conflict on a partial
    unique index over the other key columns instead."""

    section: str
    table: Table
    columns: tuple[str, ...]
    key: tuple[str, ...]
    nullable: str | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class PersonRow:
    username: str
    password: str  # plaintext from the document; "" keeps the stored hash
    customer_id: int
    role: str
    enabled: bool


@dataclass
class Plan:
    """What the document asks for, in the order it is applied (parents before children)."""

    customers: Rows
    roles: dict[str, frozenset[str]]
    people: list[PersonRow]
    tables: list[Rows]  # lines, peers, numbers, directory


def _rows(section: str, table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> Rows:
    return Rows(section, Base.metadata.tables[table], columns, key)


class Customers:
    """The customer tree as it will be: stored parents overlaid with the document's."""

    def __init__(self, session: Session):
        self.parents: dict[int, int | None] = dict(
            session.execute(select(Customer.id, Customer.parent_id)).all()
        )
        self.stored_roots = [c for c, p in self.parents.items() if p is None]

    def reference(self, item: Item, field: str = "customer", nullable: bool = False) -> int | None:
        if nullable:
            value = item.nullable_integer(field, minimum=1)
        else:
            value = item.integer(field, required=True, minimum=1)
        if value is not None and value not in self.parents:
            item.fail(field, f"unknown customer {value}")
        return value

    def required(self, item: Item) -> int:
        value = self.reference(item)
        assert value is not None  # refused above when missing
        return value

    def depth(self, cid: int) -> int:
        depth, node, seen = 0, self.parents.get(cid), {cid}
        while node is not None and node not in seen:  # cycles are refused by check()
            seen.add(node)
            depth, node = depth + 1, self.parents.get(node)
        return depth

    def check(self, item: Item, cid: int, root: int | None) -> None:
        parent = self.parents[cid]
        if parent is not None and parent not in self.parents:
            item.fail("parent", f"unknown customer {parent}")
        if parent is None and cid != root:
            item.fail("parent", f"only one customer may be the root, and {root} is")
        seen, node = {cid}, parent
        while node is not None:
            if node in seen:
                item.fail("parent", f"makes a cycle in the customer tree through {node}")
            seen.add(node)
            node = self.parents.get(node)


def validate(session: Session, doc: dict[str, Any]) -> Plan:
    """Check every item of the document (against the stored rows too); raises
    ProvisioningError naming the first bad item and field."""
    tree = Customers(session)
    customers = _customers(doc, tree)
    roles = _roles(session, doc)
    people = _people(session, doc, tree, set(roles) | set(session.scalars(select(Role.name))))
    peer_endpoints = dict(session.execute(select(Peer.endpoint, Peer.id)).all())
    line_endpoints = set(session.scalars(select(Line.endpoint)))
    usernames = {p.username for p in people} | set(session.scalars(select(Person.username)))
    lines = _lines(doc, tree, peer_endpoints, line_endpoints, usernames)
    peers = _peers(doc, peer_endpoints, line_endpoints)
    numbers = _rows("numbers", "numbers", ("number", "customer_id"), ("number",))
    for item, number in items(doc, "numbers", {"number", "customer"}, _number):
        numbers.rows.append((number, tree.required(item)))
    return Plan(customers, roles, people, [lines, peers, numbers, _directory(doc, tree)])


def _customers(doc: dict[str, Any], tree: Customers) -> Rows:
    columns = ("id", "parent_id", "name", "max_calls", *POLICY_FIELDS)
    rows = _rows("customers", "customers", columns, ("id",))
    listed: list[tuple[Item, int]] = []
    for item, cid in items(
        doc,
        "customers",
        {"id", "name", "parent", "max_calls", *POLICY_FIELDS},
        lambda it: it.integer("id", required=True, minimum=1),
    ):
        tree.parents[cid] = item.nullable_integer("parent", minimum=1)
        listed.append((item, cid))
        name = item.text("name", required=True, nonempty=True)
        row = (cid, tree.parents[cid], name, item.integer("max_calls"), *_policy(item))
        rows.rows.append(row)
    doc_roots = [cid for _, cid in listed if tree.parents[cid] is None]
    roots = tree.stored_roots or doc_roots
    root = roots[0] if roots else None
    for item, cid in listed:
        tree.check(item, cid, root)
    # Parents first: a child's row references its parent's.
    rows.rows.sort(key=lambda row: tree.depth(row[0]))
    return rows


def _policy(item: Item) -> tuple[str | None, int | None, int | None, str | None]:
    """The customer's own policy fields; None where it inherits its parent's."""
    monitor = item.value("monitor", False, None)
    if monitor is not None and monitor not in MONITOR_MODES:
        item.fail(
            "monitor", f"must be one of {', '.join(MONITOR_MODES)} (or null), not {monitor!r}"
        )
    flags = []
    for name in ("monitor_announce", "record"):
        value = item.value(name, False, None)
        if value is not None and (isinstance(value, bool) or value not in (0, 1)):
            item.fail(name, f"must be 0 or 1 (or null), not {value!r}")
        flags.append(value)
    context = item.value("context", False, None)
    if context is not None and not (isinstance(context, str) and _CONTEXT.match(context)):
        item.fail("context", f"must be a dialplan context name (A-Z a-z 0-9 _ -), not {context!r}")
    return monitor, flags[0], flags[1], context


def _roles(session: Session, doc: dict[str, Any]) -> dict[str, frozenset[str]]:
    roles: dict[str, frozenset[str]] = {}
    for item, name in items(
        doc,
        "roles",
        {"name", "privileges"},
        lambda it: it.text("name", required=True, nonempty=True, max_len=64),
    ):
        privileges = item.value("privileges", True, None)
        if not isinstance(privileges, list) or not all(isinstance(p, str) for p in privileges):
            item.fail("privileges", "must be a list of strings")
        for p in privileges:
            if p not in PRIVILEGES:
                known = ", ".join(sorted(PRIVILEGES))
                item.fail("privileges", f"unknown privilege {p!r} (known: {known})")
        roles[name] = frozenset(privileges)
    return roles


def _people(
    session: Session, doc: dict[str, Any], tree: Customers, roles: set[str]
) -> list[PersonRow]:
    stored = set(session.scalars(select(Person.username)))
    people = []
    for item, username in items(
        doc,
        "people",
        {"username", "password", "customer", "role", "enabled"},
        lambda it: it.text("username", required=True, nonempty=True, max_len=128),
    ):
        role = item.text("role", required=True, nonempty=True, max_len=64)
        if role not in roles:
            item.fail("role", f"unknown role {role!r}")
        is_new = username not in stored
        password = item.text("password", required=is_new, max_len=1024)
        if is_new and not password:
            item.fail("password", "must not be empty")
        enabled = item.flag("enabled", True)
        people.append(PersonRow(username, password, tree.required(item), role, enabled))
    return people


def _lines(
    doc: dict[str, Any],
    tree: Customers,
    peer_endpoints: dict[str, int],
    line_endpoints: set[str],
    usernames: set[str],
) -> Rows:
    columns = ("endpoint", "customer_id", "number", *LINE_FIELDS, "owner", "machine")
    rows = _rows("lines", "lines", columns, ("endpoint",))
    fields = {"endpoint", "customer", "number", *LINE_FIELDS, "owner", "machine"}
    for item, endpoint in items(doc, "lines", fields, _endpoint):
        if endpoint in peer_endpoints:
            item.fail("endpoint", f"{endpoint} is already a peer")
        line_endpoints.add(endpoint)
        number = item.text("number", required=True, nonempty=True, max_len=64)
        rows.rows.append(
            (
                endpoint,
                tree.required(item),
                number,
                item.text("name"),
                item.text("callerid_internal", default=number, max_len=64),
                item.text("callerid_external", default=number, max_len=64),
                item.text("callername_internal", max_len=128),
                item.text("callername_external", max_len=128),
                _owner(item, usernames),
                item.nullable_integer("machine", minimum=1),
            )
        )
    return rows


def _owner(item: Item, usernames: set[str]) -> str:
    """The person who owns the line (`panel` acts on its calls): a known username, or ""."""
    owner = item.text("owner", max_len=128)
    if owner and owner not in usernames:
        item.fail("owner", f"unknown person {owner!r}")
    return owner


def _peers(doc: dict[str, Any], peer_endpoints: dict[str, int], line_endpoints: set[str]) -> Rows:
    columns = ("id", "endpoint", "name", "ingroup", "outgroup", "billing_peer")
    rows = _rows("peers", "peers", columns, ("id",))
    for item, pid in items(doc, "peers", set(columns), _peer_id):
        endpoint = _endpoint(item)
        if endpoint in line_endpoints:
            item.fail("endpoint", f"{endpoint} is already a telephone line")
        if peer_endpoints.get(endpoint, pid) != pid:
            item.fail("endpoint", f"{endpoint} belongs to peer {peer_endpoints[endpoint]}")
        peer_endpoints[endpoint] = pid
        groups = (item.integer("ingroup"), item.integer("outgroup"), item.integer("billing_peer"))
        rows.rows.append((pid, endpoint, item.text("name"), *groups))
    return rows


def _directory(doc: dict[str, Any], tree: Customers) -> Rows:
    columns = ("customer_id", "number", "name")
    rows = _rows("directory", "directory", columns, ("customer_id", "number"))
    rows.nullable = "customer_id"  # NULL = a global entry (migration 0005's partial index)
    append = rows.rows.append
    for item, (customer, number) in items(
        doc,
        "directory",
        {"customer", "number", "name"},
        lambda it: (tree.reference(it, nullable=True), _number(it)),
    ):
        append((customer, number, item.text("name", required=True)))
    return rows


def _peer_id(item: Item) -> int:
    return item.integer("id", required=True, minimum=1)


def _number(item: Item) -> str:
    return item.text("number", required=True, nonempty=True, max_len=64)


def _endpoint(item: Item) -> str:
    endpoint = item.text("endpoint", required=True, nonempty=True, max_len=128)
    if not _ENDPOINT.match(endpoint):
        item.fail("endpoint", f"{endpoint!r} is not TECH/resource (e.g. PJSIP/alice)")
    return endpoint
