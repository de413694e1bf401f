"""`pbxcontrol status`: per machine, is it being recorded, by whom, and how busy it is."""

from __future__ import annotations

import json
from typing import Any, TextIO

from rich.console import Console
from sqlalchemy import Connection, func, select

from pbxcontrol import database
from pbxcontrol.config import Config
from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import LEGS_TABLE, Machine
from pbxcontrol.ops import table

STALE_BEATS = 3  # a heartbeat older than this many intervals: the recorder is not running
HEADERS = ("MACHINE", "STATE", "CONNECTED", "HOLDER", "LAST SYNC", "LEGS", "EVENTS/S", "LAST EVENT")
STATE_STYLES = {"recording": "green", "disconnected": "yellow", "stale": "bold red"}


def state(row: Any, interval: float, now: float) -> str:
    """recording (a live holder, ARI connected), disconnected (a live holder, ARI down),
    stale (its holder stopped beating: not recorded), stopped (its recorder stopped
    cleanly), never (no recorder has written it)."""
    if row is None or not row.heartbeat_at:
        return "never"
    if not row.holder:
        return "stopped"
    if now - row.heartbeat_at > STALE_BEATS * interval:
        return "stale"
    return "recording" if row.connected else "disconnected"


def _age(now: float, at: float) -> float | None:
    return round(now - at, 1) if at else None


def machines(conn: Connection, config: Config, now: float | None = None) -> list[dict[str, Any]]:
    """One entry per machine, configured or found in the database, by id. Ages are on the
    database's clock (`now`, by default read from it), which the recorders write theirs in:
    the hosts' clocks need not agree."""
    if now is None:
        now = float(conn.execute(select(db_now(conn.dialect.name))).scalar_one())
    rows = {m.id: m for m in conn.execute(select(Machine.__table__))}
    counted = select(LEGS_TABLE.c.machine, func.count()).group_by(LEGS_TABLE.c.machine)
    legs: dict[int, int] = {machine: n for machine, n in conn.execute(counted)}
    configured = {m.id for m in config.machines}
    found = []
    for mid in sorted(configured | set(rows)):
        row = rows.get(mid)
        current = state(row, config.heartbeat, now)
        flagged = row is not None and not row.recorded
        found.append(
            {
                "machine": mid,
                "configured": mid in configured,
                "state": current,
                "recording": current == "recording",
                "connected": current == "recording",  # a live holder hears from ARI
                "holder": row.holder if row is not None else "",
                "epoch": row.epoch if row is not None else 0,  # the lease's (SPEC §10)
                "heartbeat_age": _age(now, row.heartbeat_at) if row is not None else None,
                "last_sync_age": _age(now, row.last_sync) if row is not None else None,
                "live_legs": legs.get(mid, 0),
                "events_per_second": row.events_per_second if row is not None else 0.0,
                "events_total": row.events_total if row is not None else 0,
                "last_event_age": _age(now, row.last_event_at) if row is not None else None,
                # SPEC §12: its legs flagged, since its last renewal (pbxcontrol.db.unrecorded)
                "recorded": not flagged,
                "unrecorded_since": row.renewed_at if row is not None and flagged else None,
            }
        )
    return found


def _cells(m: dict[str, Any]) -> list[table.Cell]:
    live = m["state"] in ("recording", "disconnected")
    beat = f"(heartbeat {table.ago(m['heartbeat_age'])} ago)" if m["state"] == "stale" else ""
    return [
        str(m["machine"]) + ("" if m["configured"] else " (not configured)"),
        (m["state"], beat),
        "yes" if m["connected"] else "no",
        f"{m['holder']} (epoch {m['epoch']})" if m["holder"] else "-",
        _ago(m["last_sync_age"]),
        str(m["live_legs"]),
        f"{m['events_per_second']:.1f}" if live else "-",
        _ago(m["last_event_age"]),
    ]


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{table.ago(seconds)} ago"


def show(config: Config, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the status of every machine; exit status 0."""
    engine, _sessions = database.open_database(config, create_if_empty=False)
    try:
        with engine.connect() as conn:
            found = machines(conn, config)
    finally:
        engine.dispose()
    console = Console(file=out) if out is not None else Console()
    if as_json:
        console.file.write(json.dumps(found) + "\n")
        return 0
    body = [_cells(m) for m in found]
    if not console.is_terminal:
        console.file.write(table.plain(HEADERS, body) + "\n")
        return 0
    styles = [STATE_STYLES.get(m["state"], "") for m in found]
    console.print(table.rich_table("pbxcontrol status", HEADERS, body, styles))
    return 0
