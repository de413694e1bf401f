"""The customer tree's closure table, kept in step with customers.parent_id."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from pbxcontrol.db.models import Customer, CustomerTree


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


def rebuild_customer_tree(session: Session) -> None:
    """Recompute the closure table from customers.parent_id (validated to be a tree). Only the
    pairs that changed are written, so an unchanged tree writes nothing (and the data-version
    counter, which invalidates every cached answer, does not move)."""
    session.flush()
    parents = dict(session.execute(select(Customer.id, Customer.parent_id)).tuples().all())
    wanted = closure(parents)
    stored = {
        (a, d, depth)
        for a, d, depth in session.execute(
            select(CustomerTree.ancestor_id, CustomerTree.descendant_id, CustomerTree.depth)
        ).tuples()
    }
    conn = session.connection()  # Core executemany: the ORM has no bulk DELETE by key
    stale = [{"a": a, "d": d} for a, d, _ in stored - wanted]
    if stale:
        conn.execute(
            delete(CustomerTree).where(
                CustomerTree.ancestor_id == bindparam("a"),
                CustomerTree.descendant_id == bindparam("d"),
            ),
            stale,
        )
    new = [{"ancestor_id": a, "descendant_id": d, "depth": n} for a, d, n in wanted - stored]
    if new:
        conn.execute(insert(CustomerTree), new)
