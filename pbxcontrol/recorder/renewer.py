"""The holder's lease renewals, on a thread and a database connection of their own.

The writer's transactions may queue on a busy database for seconds; the lease must not expire
meanwhile while the holder is alive (pbxcontrol/recorder/lease.py says how the renewal and the
fenced writes avoid waiting for each other). A renewal is one short UPDATE of `renewed_at`,
conditional on the epoch, every `renew_interval` (a fifth of `takeover_seconds`) and at once
when the lease is in doubt (`Lease.suspect`). The reader trusts the lease by the renewals that
succeeded (`Lease.valid`); a renewal that finds another epoch makes it untrusted at once (the
reader closes the websocket, the writer's next fence finds the lease lost). While the writer
thread shows no sign of life (`Lease.writer_alive`), nothing is renewed: a hung writer loses
its lease as before.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.db.clock import db_now
from pbxcontrol.recorder.lease import MACHINES, Lease

log = logging.getLogger("pbxcontrol.recorder")


class Renewer:
    """Renews one machine's lease while this process holds it (its own thread: `run`)."""

    def __init__(self, sessions: sessionmaker[Session], lease: Lease, stopping: threading.Event):
        self.sessions = sessions
        self.lease = lease
        self.stopping = stopping
        self.renewals = 0
        self._quiet = False  # the writer's silence was logged

    def run(self) -> None:
        while not self.stopping.is_set():
            self.lease.wanted.wait(self.lease.renew_interval)
            self.lease.wanted.clear()
            if self.stopping.is_set():
                return
            if self.lease.epoch is not None:
                self.renew()

    def renew(self) -> bool:
        """One renewal, if the writer is alive; True when the lease is still ours."""
        epoch = self.lease.epoch
        if epoch is None:
            return False
        if not self.lease.writer_alive():
            if not self._quiet:
                log.warning(
                    "%s: the writer shows no progress: not renewing the lease", self.lease.name
                )
            self._quiet = True
            return False
        self._quiet = False
        started = time.monotonic()
        try:
            with self.sessions.begin() as session:
                held = self._update(session, epoch)
        except SQLAlchemyError as exc:  # the writer says so too; the lease lapses by itself
            log.debug("%s: renewal failed: %s", self.lease.name, str(exc).splitlines()[0])
            return False
        if self.lease.epoch != epoch:
            return False  # lost or released meanwhile
        if held:
            self.renewals += 1
            self.lease.confirmed(started)
        else:
            self.lease.revoke()  # another epoch holds it: the reader closes at once
        return held

    def _update(self, session: Session, epoch: int) -> bool:
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            wait = str(int(self.lease.expiry * 1000))
            session.execute(text("SELECT set_config('lock_timeout', :w, true)"), {"w": wait})
        done = session.execute(
            MACHINES.update()
            .where(MACHINES.c.id == self.lease.machine, MACHINES.c.epoch == epoch)
            .values(renewed_at=db_now(dialect))
        )
        return cast(CursorResult[Any], done).rowcount == 1
