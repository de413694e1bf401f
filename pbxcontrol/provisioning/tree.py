"""The customer tree's closure table, kept in step with customers.parent_id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.orm import Session

from pbxcontrol.db.models import Customer, CustomerTree

T = TypeVar("T")


def closure(parents: dict[int, int | None]) -> set[tuple[int, int, int]]:
    """Every (ancestor, descendant, depth) of a tree given as child -> parent, self at depth 0."""
    rows = set()
    for cid in parents:
        depth, node = 0, cid
        while True:
            rows.add((node, cid, depth))
            parent = parents[node]
            if parent is None:
                break
            depth, node = depth + 1, parent
    return rows


def rebuild_customer_tree(session: Session) -> bool:
    """Recompute the closure table from customers.parent_id (validated to be a tree). Only the
    pairs that changed are written, so an unchanged tree writes nothing (and the data-version
    counter, which invalidates every cached answer, does not move). True if it wrote."""
    session.flush()
    parents = dict(session.execute(select(Customer.id, Customer.parent_id)).all())
    wanted = closure(parents)
    stored = {
        (a, d, depth)
        for a, d, depth in session.execute(
            select(CustomerTree.ancestor_id, CustomerTree.descendant_id, CustomerTree.depth)
        )
    }
    conn = session.connection()
    # Chunks of whole statements, not executemany: on PostgreSQL the data-version trigger fires
    # per statement (see bulk._write).
    stale = sorted((a, d) for a, d, _ in stored - wanted)
    pair = tuple_(CustomerTree.ancestor_id, CustomerTree.descendant_id)
    for pairs in _chunks(stale):
        conn.execute(delete(CustomerTree).where(pair.in_(pairs)))
    for triples in _chunks(sorted(wanted - stored)):
        rows = [{"ancestor_id": a, "descendant_id": d, "depth": n} for a, d, n in triples]
        conn.execute(insert(CustomerTree).values(rows))
    return wanted != stored


def _chunks(items: list[T], size: int = 1000) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
