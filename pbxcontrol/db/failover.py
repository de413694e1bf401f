"""After a PostgreSQL failover, counters move on past anything the old primary handed out.

A standby promoted after its primary died may lack the primary's last commits (streaming
replication is asynchronous unless configured otherwise): the change journal's ids and the
data version would then be handed out again, for other changes — a stream resuming from such
an id would skip changes, an answer cached under such a version would be served for other
data. Every promotion starts a new timeline (the first 8 hex digits of a WAL file's name), so
the first connection that finds the timeline changed since the one kept in `counters`
(migration 0018, row `timeline`) moves the journal's id sequence on by `GAP` — more than a
lost tail of commits can hold — and appends a `reset` entry there (pbx_journal_append,
migration 0016): the data version, the journal's head plus a counter, moves on with it; every
stream, view and cache starts afresh from what the new primary has, and any `Last-Event-ID`
from before gets a snapshot. A database without the row (schema older than 0018), a server in
recovery and SQLite are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from pbxcontrol.db.journal import CHANNEL

log = logging.getLogger("pbxcontrol.db")

GAP = 1_000_000

_PROBE = (
    "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END, "
    "(SELECT value FROM counters WHERE name = 'timeline')"
)
_TAKE = "UPDATE counters SET value = %s WHERE name = 'timeline' AND value = %s RETURNING 1"
_SKIP = "SELECT setval('leg_changes_ids', (SELECT last_value FROM leg_changes_ids) + %s, true)"
_RESET = (
    "SELECT pbx_journal_append(0, ARRAY['']::text[], ARRAY['reset']::text[], "
    "ARRAY[NULL]::integer[], ARRAY[NULL]::integer[], ARRAY[NULL]::integer[], "
    "ARRAY[NULL]::integer[], false, %s)"
)


class Hosts:
    """A multi-host URL's hosts tried from the one that last answered as the primary: after a
    failover, a new connection goes to the promoted server at once instead of waiting out the
    connect timeout on the dead one first (libpq tries the hosts in the order given)."""

    def __init__(self) -> None:
        self.last: tuple[str, str] | None = None  # the host that last answered
        self.dead: tuple[str, str] | None = None  # the host whose connection last died

    def answered(self, connection: Any) -> None:
        """(The pool's connect event.) `connection` reached the primary."""
        self.last = _host(connection)
        if self.last == self.dead:
            self.dead = None

    def failed(self, connection: Any) -> None:
        """A connection to this host stopped answering: try the others first."""
        self.dead = _host(connection)

    def prefer(self, _dialect: Any, _record: Any, _cargs: Any, cparams: dict) -> None:
        """(The engine's do_connect event.) The host that last answered first, the one that
        last died last."""
        hosts = str(cparams.get("host") or "").split(",")
        ports = str(cparams.get("port") or "").split(",")
        if len(hosts) < 2 or len(ports) != len(hosts):
            return
        pairs = list(zip(hosts, ports, strict=True))
        pairs.sort(key=lambda pair: 1 if pair == self.dead else -1 if pair == self.last else 0)
        cparams["host"] = ",".join(h for h, _ in pairs)
        cparams["port"] = ",".join(p for _, p in pairs)


def _host(connection: Any) -> tuple[str, str] | None:
    with contextlib.suppress(Exception):
        return (str(connection.info.host), str(connection.info.port))
    return None


def check_timeline(connection: Any) -> bool:
    """On a new psycopg `connection`: move the counters on if the server's timeline changed
    since they were last moved; True if this connection did. Leaves no transaction open."""
    import psycopg

    before = connection.autocommit
    connection.autocommit = True
    try:
        try:
            timeline, kept = connection.execute(_PROBE).fetchone()
        except psycopg.errors.UndefinedTable:
            return False  # an empty database (initdb has not run)
        if timeline is None or kept is None or timeline == kept:
            return False
        try:
            return _move_on(connection, int(kept), int(timeline))
        except psycopg.errors.InsufficientPrivilege:
            # A role that writes no journal (`pbxcontrol grants`' API role): it may read on;
            # the first writer's connection moves the journal on before its first write.
            return False
    finally:
        if not connection.closed:
            connection.autocommit = before


def _move_on(connection: Any, kept: int, timeline: int) -> bool:
    with connection.transaction():
        if connection.execute(_TAKE, (timeline, kept)).fetchone() is None:
            return False  # another connection did it
        if kept == 0:
            return False  # the first look at this database: nothing to move past
        connection.execute(_SKIP, (GAP,))
        head = connection.execute(_RESET, (time.time(),)).fetchone()[0]
        connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(head)))
    log.warning(
        "the database is on a new timeline (%d, was %d): a promoted standby; the change "
        "journal (and the data version) moved on to %d, every stream starts with a snapshot",
        timeline,
        kept,
        head,
    )
    return True
