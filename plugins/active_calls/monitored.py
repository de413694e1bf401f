"""The list's `monitor` field, per viewer (SPEC §11.8): the strongest live monitoring session on
a leg (`listen`, `whisper`, `barge`), shown only to a viewer who holds `monitor` over the leg's
owning customer (its line's customer, else `scustomer`, else `dcustomer`), or to everyone who
sees the leg when that customer's policy has `monitor_announce=1`; `""` to everyone else.

Every row the list keeps, caches or streams is made with `"monitor":""` (sqlterms.shown): one
copy serves every viewer, and a row that reaches a viewer without passing through here holds
nothing it should not. Here, per answer, the few monitored legs the viewer may be told of get
their mode written into their row. The answer cache and the stream hub key answers by
`viewer_key` (who asks, and whether they hold `monitor`), never by the customer alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, select, tuple_

from pbxcontrol.plugin import Caller, tables

from .policy import policy_of

legs, lines, tree = tables.legs, tables.lines, tables.customer_tree
Key = tuple[int, str]
PLACEHOLDER = b'"monitor":""'
_CHUNK = 500


def viewer_key(caller: Caller) -> tuple[int, bool, bool]:
    """Who asks, as far as any answer of the list depends on it."""
    return (caller.customer_id, caller.is_system_owner, "monitor" in caller.privileges)


def show(obj: bytes, mode: str) -> bytes:
    """A row's JSON with its mode written in (a JSON string's quotes are escaped, so the
    placeholder cannot occur inside a value)."""
    return obj.replace(PLACEHOLDER, b'"monitor":"' + mode.encode() + b'"', 1)


def visible(conn: Connection, caller: Caller, keys: Iterable[Key] | None = None) -> dict[Key, str]:
    """The legs (of `keys`; None: every live leg) with a live session whose mode this viewer
    may be told: key -> mode. One query on the monitored legs, none when `keys` is empty."""
    wanted = list(keys) if keys is not None else None
    if wanted is not None and not wanted:
        return {}
    lg = legs.c
    query = (
        select(lg.machine, lg.uniqueid, lg.monitor, lines.c.customer_id, lg.scustomer, lg.dcustomer)
        .select_from(legs.outerjoin(lines, lines.c.endpoint == lg.endpoint))
        .where(lg.monitor != "")
    )
    found: list[Any] = []
    if wanted is None:
        found = list(conn.execute(query))
    for i in range(0, len(wanted or ()), _CHUNK):
        chunk = (wanted or [])[i : i + _CHUNK]
        found += conn.execute(query.where(tuple_(lg.machine, lg.uniqueid).in_(chunk))).all()
    if not found:
        return {}
    owners = {(r[0], r[1]): (r[2], int(r[3] or r[4] or r[5] or 0)) for r in found}
    mine = _held(conn, caller, {owner for _, owner in owners.values()})
    announced: dict[int, bool] = {}
    shown: dict[Key, str] = {}
    for key, (mode, owner) in owners.items():
        if owner not in announced:
            announced[owner] = bool(owner) and policy_of(conn, owner, "").monitor_announce == 1
        if owner in mine or announced[owner]:
            shown[key] = mode
    return shown


def _held(conn: Connection, caller: Caller, owners: set[int]) -> set[int]:
    """The owners over whom the caller holds `monitor` (their customer or one under it)."""
    if "monitor" not in caller.privileges or not owners:
        return set()
    t = tree.c
    rows = conn.execute(
        select(t.descendant_id).where(
            and_(t.ancestor_id == caller.customer_id, t.descendant_id.in_(sorted(owners)))
        )
    )
    return {int(r[0]) for r in rows}


def shown_rows(conn: Connection, caller: Caller, rows: list[tuple[Key, str]]) -> list[Any]:
    """`rows` (key, JSON text) with the modes this viewer may see written in."""
    modes = visible(conn, caller, [key for key, _ in rows] if len(rows) <= _CHUNK else None)
    if not modes:
        return rows
    return [
        (key, show(obj.encode(), modes[key]).decode() if key in modes else obj) for key, obj in rows
    ]
