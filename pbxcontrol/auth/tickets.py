"""`/api/json/stream/ticket/` (SPEC §13): a one-use ticket, valid 30 s, that opens one live
stream in place of credentials, so no password or token reaches a URL that proxies log.

Tickets live in the database (table `stream_tickets`, as digests), so a ticket issued by one
API process or host opens a stream on any other; opening deletes the row, and only the
request whose DELETE removed it gets the stream (one use, however many race for it).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, delete, insert

from pbxcontrol.auth.tokens import Claims
from pbxcontrol.db.models import StreamTicket
from pbxcontrol.http.api import ANY_PRIVILEGE, ApiRequest, JsonApi

PATH = "stream/ticket"
LIFETIME = 30.0  # seconds
USED = "The ticket is invalid, used or expired; ask stream/ticket for another."
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)

_COLUMNS = (
    StreamTicket.username,
    StreamTicket.epoch,
    StreamTicket.scope,
    StreamTicket.jti,
    StreamTicket.token_expires,
)


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def register(api: JsonApi, clock: Callable[[], float] = time.time) -> None:
    """Any credentials, any privilege, any scope: what the ticket may open is decided when it
    is used, by the stream function's own privileges."""

    def ticket(request: ApiRequest) -> dict[str, Any]:
        caller, conn, now = request.caller, request.conn, clock()
        value = secrets.token_urlsafe(32)
        conn.execute(delete(StreamTicket).where(StreamTicket.expires < now))  # pruned
        conn.execute(
            insert(StreamTicket).values(
                digest=_digest(value),
                expires=now + LIFETIME,
                username=caller.username,
                epoch=caller.token_epoch,
                scope=caller.scope,
                jti=caller.token_id,
                token_expires=caller.token_expires,
            )
        )
        return {"ticket": value, "expires": int(now + LIFETIME)}

    api.add(PATH, ticket, [ANY_PRIVILEGE], read=True)


def consume(conn: Connection, ticket: str, clock: Callable[[], float] = time.time) -> Claims | None:
    """Use `ticket` up: the claims of whom it was issued to, or None (malformed, unknown,
    used, expired). Commit the connection's transaction to make the use stick."""
    if not _SHAPE.fullmatch(ticket):
        return None
    # One statement that deletes and reads (RETURNING: SQLite 3.35+, PostgreSQL): of two
    # requests racing with one ticket, the one whose DELETE finds the row gone (PostgreSQL:
    # after waiting for the other's commit; SQLite: for its write lock) gets nothing.
    row = conn.execute(
        delete(StreamTicket)
        .where(StreamTicket.digest == _digest(ticket), StreamTicket.expires >= clock())
        .returning(*_COLUMNS)
    ).first()
    if row is None:
        return None
    return Claims(row.username, row.epoch, row.token_expires, row.jti, row.scope)
