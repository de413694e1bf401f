"""calls/active/scopes: which `customer` scopes of calls/active/list the caller may ask for.

The wallboard's scope chooser: the caller's own customer and every customer under it (the
same subtree rule as the list: nothing outside it is named), whether `customer=system` is
theirs, and their privileges (so a page shows only the actions it may take).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from pbxcontrol.plugin import ApiRequest, tables

from .listing import PRIVILEGES

tree, customer = tables.customer_tree, tables.customers

__all__ = ["PRIVILEGES", "scopes"]


def scopes(request: ApiRequest) -> dict[str, Any]:
    caller = request.caller
    rows = request.conn.execute(
        select(customer.c.id, customer.c.name, customer.c.parent_id, tree.c.depth)
        .join(tree, tree.c.descendant_id == customer.c.id)
        .where(tree.c.ancestor_id == caller.customer_id)
        .order_by(tree.c.depth, customer.c.name, customer.c.id)
    ).all()
    return {
        "username": caller.username,
        "customer": caller.customer_id,
        "system": caller.is_system_owner,
        "privileges": sorted(caller.privileges),
        "customers": [
            # The caller's own customer has no parent as far as they are concerned.
            {"id": cid, "name": name, "parent": parent if depth else 0, "depth": depth}
            for cid, name, parent, depth in rows
        ],
    }
