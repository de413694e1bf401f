"""The recorder's transactions: fenced by the lease, outages retried, refusals surfaced."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.db.engine import close_kept
from pbxcontrol.db.outage import describe, is_outage
from pbxcontrol.liveness import Pulse
from pbxcontrol.recorder.checkpoint import no_autocheckpoint
from pbxcontrol.recorder.lease import Lease, LeaseLost

log = logging.getLogger("pbxcontrol.recorder")
T = TypeVar("T")
REFUSED_BACKOFF_MAX = 30.0


class Transactions:
    """Runs one unit of work per transaction for one machine's writer thread (only: on
    PostgreSQL every transaction runs on the writer's own kept connection). Fenced work
    starts with the lease's fence; the lease is renewed elsewhere (recorder/renewer.py) while
    the writer is alive (`Lease.busy`: it waits on the database meanwhile). The outcome of the
    last run is in the flags: `lost` (the lease is gone: stop recording), `refused` (the
    database refused the write as a bug: resync from the database and Asterisk instead of
    retrying it), `back` (the database answers again after an outage: resync). Its pauses
    between tries are the writer's waits (`pulse`: the watchdog counts them as idle,
    pbxcontrol.liveness)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        lease: Lease,
        name: str,
        stopping: threading.Event,
        pulse: Pulse | None = None,
    ):
        self.sessions = sessions
        self.lease = lease
        self.name = name
        self.stopping = stopping
        self.pulse = pulse or Pulse()
        self.lost = False
        self.refused = False
        self.back = False
        self.refusals = 0  # in a row: the wait before the next resync grows with them
        self.failing_since: float | None = None
        self.tries = 0  # of the current outage
        self._kept: Connection | None = None  # PostgreSQL: the writer's own (run, run_kept)
        self._postgresql = sessions.kw["bind"].dialect.name == "postgresql"

    def run(self, work: Callable[[Session], T], what: str, fenced: bool = True) -> T | None:
        """`work(session)` in one transaction; its result, or None when it did not commit."""
        if fenced and self.lost:
            return None
        started, renewed = time.monotonic(), False
        try:
            with self.lease.busy(), self._session() as session, session.begin():
                if fenced:
                    renewed = self.lease.fence(session)
                no_autocheckpoint(session.connection())  # SQLite: checkpoint.py says why
                result = work(session)
        except LeaseLost as exc:
            self.lost = True
            log.warning("%s; standing by (nothing more is written for it)", exc)
            return None
        except SQLAlchemyError as exc:
            self.close(invalidate=True)
            self._failed(exc, what)
            return None
        if renewed:  # SQLite: its fence renews (the renewer waits for this writer's lock)
            self.lease.confirmed(started)
        self._succeeded()
        return result

    def run_kept(self, work: Callable[[Connection, dict[str, Any]], bool], what: str) -> bool:
        """PostgreSQL: `work(connection, fence)` in one transaction on the writer's own kept
        connection; `work` runs the lease's fence (`fence` its parameters) in its first
        statement and returns False when it found the lease gone. True when it committed.

        Why kept: a pooled connection is pinged at each checkout (engine.py's Guard), and a
        Session is built around it — with the fence's own statement that was half the
        recorder's CPU per transaction in a busy hour (one event or two each). A failed
        transaction drops it: the next connects afresh (to a promoted standby too)."""
        if self.lost:
            return False
        try:
            with self.lease.busy():
                conn = self._kept_connection()
                with conn.begin():
                    if not work(conn, self.lease.fence_params()):
                        self.lease.lost(conn)
        except LeaseLost as exc:
            self.lost = True
            self.close()
            log.warning("%s; standing by (nothing more is written for it)", exc)
            return False
        except SQLAlchemyError as exc:
            self.close(invalidate=True)
            self._failed(exc, what)
            return False
        self._succeeded()
        return True

    def close(self, invalidate: bool = False) -> None:
        """Give the kept connection up (the writer's thread, or once it has stopped)."""
        conn, self._kept = self._kept, None
        close_kept(conn, invalidate)

    def _session(self) -> Session:
        """PostgreSQL: a session of the kept connection (no checkout, no ping); SQLite: the
        pool's (one writer at a time: the checkpointer's connection is another)."""
        if self._postgresql:
            return self.sessions(bind=self._kept_connection())
        return self.sessions()

    def _kept_connection(self) -> Connection:
        if self._kept is None:
            self._kept = self.sessions.kw["bind"].connect()
        return self._kept

    def _succeeded(self) -> None:
        self.refusals = 0
        if self.failing_since is not None:
            log.info(
                "%s: database back after %.1f s; resyncing",
                self.name,
                time.monotonic() - self.failing_since,
            )
            self.failing_since = None
            self.back = True

    def __call__(self, work: Callable[[Session], T], what: str) -> T | None:
        return self.run(work, what)

    def _failed(self, exc: SQLAlchemyError, what: str) -> None:
        if not is_outage(exc):
            # Retrying the same batch would fail the same way forever (a UniqueViolation
            # retried 46 times as if the database were down, found with two recorders on one
            # machine): say it once, and rebuild the machine's state instead.
            self.refused = True
            self.refusals += 1
            log.error(
                "%s: the database refused %s (%s: %s): a bug, not an outage; resyncing the "
                "machine from the database and Asterisk instead of retrying",
                *(self.name, what, type(exc).__name__, describe(exc)),
            )
            self.pulse.wait(self.stopping, min(REFUSED_BACKOFF_MAX, 0.5 * 2 ** (self.refusals - 1)))
            return
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since, self.tries = now, 0
        self.tries += 1
        pause = min(5.0, 0.2 + now - self.failing_since)
        # One line per try (the first an error): the outage is visible while it lasts.
        log.log(
            logging.ERROR if self.tries == 1 else logging.WARNING,
            "%s: database unreachable while %s (try %d, %.0f s: %s); next try in %.1f s",
            *(self.name, what, self.tries, now - self.failing_since, describe(exc), pause),
        )
        self.pulse.wait(self.stopping, pause)
