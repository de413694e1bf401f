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

from sqlalchemy import Connection, CursorResult, bindparam, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.db.clock import db_now
from pbxcontrol.db.engine import KeptReader
from pbxcontrol.recorder.lease import MACHINES, Lease

log = logging.getLogger("pbxcontrol.recorder")
WAIT_SET = "pbxcontrol.renewer_lock_timeout"  # the kept connection's lock wait, once set
_RENEW_POSTGRESQL = (
    MACHINES.update()
    .where(MACHINES.c.id == bindparam("r_machine"), MACHINES.c.epoch == bindparam("r_epoch"))
    .values(renewed_at=db_now("postgresql"))
)


class Renewer:
    """Renews one machine's lease while this process holds it (its own thread: `run`)."""

    def __init__(self, sessions: sessionmaker[Session], lease: Lease, stopping: threading.Event):
        self.sessions = sessions
        self.lease = lease
        self.stopping = stopping
        self.renewals = 0
        self._quiet = False  # the writer's silence was logged
        # PostgreSQL: a renewal is one UPDATE on a connection kept in autocommit (a pooled
        # one cost a ping, BEGIN, the lock wait's SET and COMMIT too: five round trips, each a
        # wait for a CPU on a starved host — 50 machines' burst at load 38 let three leases
        # lapse to their standbys).
        engine = sessions.kw["bind"]
        self.kept = KeptReader(engine) if engine.dialect.name == "postgresql" else None

    def run(self) -> None:
        try:
            self._renewals()
        finally:
            self.close()

    def _renewals(self) -> None:
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
            if self.kept is not None:
                with self.kept.round() as conn:
                    held = self._update_kept(conn, epoch)
            else:
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

    def _update_kept(self, conn: Connection, epoch: int) -> bool:
        wait = str(int(self.lease.expiry * 1000))
        if conn.info.get(WAIT_SET) != wait:  # once per connection: nobody waits longer
            conn.execute(text("SELECT set_config('lock_timeout', :w, false)"), {"w": wait})
            conn.info[WAIT_SET] = wait
        params = {"r_machine": self.lease.machine, "r_epoch": epoch}
        return cast(CursorResult[Any], conn.execute(_RENEW_POSTGRESQL, params)).rowcount == 1

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()

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
