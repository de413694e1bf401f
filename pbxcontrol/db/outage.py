"""Telling a database that cannot answer right now (retry, answer 503) from a wrong statement."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

#: PostgreSQL SQLSTATE classes of a database that cannot write right now, not of a wrong
#: write: connection (08), read-only transaction (25), serialization/deadlock (40), disk full
#: (53), lock not available (55), shutdown/cancel (57), I/O (58).
OUTAGE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58"})
#: SQLite's primary result codes of the same kind: BUSY, LOCKED, READONLY, IOERR, FULL,
#: CANTOPEN (a directory not mounted yet), PROTOCOL.
SQLITE_OUTAGES = frozenset({5, 6, 8, 10, 13, 14, 15})


class DatabaseUnavailable(Exception):
    """The database does not answer (or not as a primary): try again later. The message, one
    line without credentials, is for the operator."""


def is_outage(exc: BaseException) -> bool:
    """A failure of the database, not of the statement (server down, network cut, connection
    killed, read-only, disk full, a statement the server or our deadline cancelled): retry.
    Anything else (a constraint violated, bad SQL, a value out of range) is a bug."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if not isinstance(exc, SQLAlchemyError):
        return False
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):  # SQLite says OperationalError of a missing table too
        return code & 0xFF in SQLITE_OUTAGES
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and state[:2] in OUTAGE_CLASSES:
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def outage_in(exc: BaseException) -> BaseException | None:
    """The outage among `exc` and its causes (a plugin's set-up wraps what it raised), if any."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if is_outage(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe(exc: BaseException) -> str:
    """The driver's message and detail, without the statement and its parameters."""
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return " ".join(line.strip() for line in lines[:2]) or type(exc).__name__


class OutageLog:
    """One warning per `every` seconds for failures caused by the database not answering
    (each request answered 503 would otherwise log one), with how many since the last."""

    def __init__(self, log: logging.Logger, every: float = 10.0) -> None:
        self.log = log
        self.every = every
        self._next = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def seen(self, exc: BaseException) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now < self._next:
                return
            count, self._count, self._next = self._count, 0, now + self.every
        self.log.warning(
            "the database does not answer (%s): answered 503 (%d)", describe(exc), count
        )
