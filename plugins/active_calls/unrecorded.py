"""calls/active/unrecorded: the machines whose legs are flagged not recorded, and since when.

SPEC §12: a leg carries `recorded: 0` while its machine's lease has not been renewed for
2 x takeover_seconds; this says since when (the database's clock at the machine's last
renewal), for the wallboard's banner. Machine ids and times only: no tenant data.
"""

from __future__ import annotations

from typing import Any

from pbxcontrol.plugin import ApiRequest, unrecorded_machines

from .listing import PRIVILEGES

__all__ = ["PRIVILEGES", "unrecorded"]


def unrecorded(request: ApiRequest) -> list[dict[str, Any]]:
    return [
        {"machine": machine, "since": since} for machine, since in unrecorded_machines(request.conn)
    ]
