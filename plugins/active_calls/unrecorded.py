"""calls/active/unrecorded: the machines whose legs are flagged not recorded, and since when.

SPEC §12: a leg carries `recorded: 0` while its machine's lease has not been renewed for
2 x takeover_seconds; this says since when (the database's clock at the machine's last
renewal), for the wallboard's banner. Machine ids and times only: no tenant data.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, select

from pbxcontrol.plugin import ApiRequest, tables

from .listing import PRIVILEGES

__all__ = ["PRIVILEGES", "unrecorded"]
MACHINES = tables.machines


def unrecorded(request: ApiRequest) -> list[dict[str, Any]]:
    # `recorded` false: what its legs were last set to; its last renewal is "since when".
    rows = request.conn.execute(
        select(MACHINES.c.id, MACHINES.c.renewed_at)
        .where(MACHINES.c.recorded == false())
        .order_by(MACHINES.c.id)
    )
    return [{"machine": machine, "since": float(since)} for machine, since in rows]
