"""The writer thread's turns at a machine's lease: stand by until the lease is ours, record,
stand by again when it is lost; at a stop, write what was read and release the lease."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session

from pbxcontrol.recorder.lease import Holder, Lease
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.status import Heartbeat
from pbxcontrol.recorder.transactions import Transactions

log = logging.getLogger("pbxcontrol.recorder")


class Recording(Protocol):
    """What the standby needs of the recording it takes turns for (MachineRecorder)."""

    @property
    def received(self) -> int: ...

    def record(self) -> None:
        """Record until stopped (everything read written) or the lease is lost."""

    def flush(self) -> bool:
        """Write what was applied; False when it did not commit."""

    def load(self, what: str) -> LiveLegs | None:
        """The machine's legs as the database has them (fenced), or None."""

    def on_takeover(self, live: LiveLegs) -> None:
        """The lease is ours: record from `live` on, nothing read before it."""

    def on_lost(self) -> None:
        """The lease is lost: close the websocket, forget the legs and what was read."""


class Standby:
    """Runs one machine's writer thread around its recording (MachineRecorder owns it), and
    tells the reader thread when it may connect: while the lease is held and renewed, and not
    during the pause after an ApplicationReplaced. The writer's `pulse` (the transactions')
    tells the watchdog whether it works or waits."""

    def __init__(
        self,
        recording: Recording,
        lease: Lease,
        tx: Transactions,
        status: Heartbeat,
        stopping: threading.Event,
        name: str,
    ):
        self.recording = recording
        self.lease = lease
        self.tx = tx
        self.status = status
        self.stopping = stopping
        self.name = name
        self.pulse = tx.pulse
        self.holding = threading.Event()  # set while this process records the machine
        self._seen: Holder | None = None  # the other holder last logged
        self._first_reconcile = False  # the first reconcile of this turn is logged
        self._replaced_until = 0.0  # monotonic: no reconnect before (ApplicationReplaced)
        self._replacements = 0

    def run(self) -> None:
        """The writer thread, until a stop."""
        self.pulse.attach()
        while not self.stopping.is_set():
            if self.lease.epoch is None and not self._stand_by():
                break
            self.recording.record()
            if self.tx.lost:
                self._drop()
        self._finish()

    # -- the reader thread asks -----------------------------------------------------------
    def may_connect(self) -> bool:
        """Open the websocket: only while the lease is held and trusted."""
        return (
            self.holding.is_set()
            and self.lease.valid()
            and time.monotonic() >= self._replaced_until
        )

    def may_keep(self) -> bool:
        """Keep an open websocket: while the lease is held, not known lost, and not in doubt
        for longer than `takeover_seconds` (renewals late on a starved host or a slow
        database). Closing it at the first doubt lost the events in flight (issue 21); keeping
        it is safe: nothing is written without the fence, and a standby that took the lease
        connects, which makes Asterisk replace this websocket (ApplicationReplaced)."""
        return (
            self.holding.is_set()
            and not self.lease.revoked
            and self.lease.doubted_for() < self.lease.takeover
        )

    def replaced(self) -> None:
        """Reader thread, on ApplicationReplaced: trust the lease again only once the writer
        has renewed it, and then reconnect after a growing pause (a client outside the lease
        uses our application name: flapping with it must stay slow)."""
        self.lease.suspect()
        self._replacements += 1
        self._replaced_until = time.monotonic() + min(30.0, 2.0 ** (self._replacements - 1))

    # -- the writer thread ------------------------------------------------------------------
    def reconciled(self, live: int) -> None:
        """The recording reconciled with Asterisk: the first time in a turn is worth a line."""
        if self._first_reconcile:
            self._first_reconcile = False
            log.info(
                "%s: recording (epoch %s): reconciled, %d live legs",
                *(self.name, self.lease.epoch, live),
            )

    def _stand_by(self) -> bool:
        """Wait for the lease; True once held and the legs loaded, False at a stop. Nothing
        connects to ARI before (a second websocket would replace the holder's)."""
        self.tx.run(lambda s: self.lease.ensure_row(s, self.name), "checking", fenced=False)
        while not self.stopping.is_set():
            if self.tx.run(self.lease.try_acquire, "taking the lease", fenced=False):
                if self._take():
                    return True
            elif self.lease.seen is not None and self.lease.seen != self._seen:
                if self._seen is None or self._seen.holder != self.lease.seen.holder:
                    log.info(
                        "%s: standby, holder %s (epoch %d)",
                        *(self.name, self.lease.seen.holder, self.lease.seen.epoch),
                    )
                self._seen = self.lease.seen
            self.pulse.wait(self.stopping, self.lease.poll_interval)
        return False

    def _take(self) -> bool:
        """Just took the lease: start from what the previous holder wrote (what it derived
        is kept), then let the reader connect (it reconciles)."""
        self.tx.lost = self.tx.refused = self.tx.back = False
        live = None
        while live is None and not self.stopping.is_set():
            live = self.recording.load("loading the legs")
            if self.tx.lost:
                self._drop()
                return False
        if live is None:
            return False
        self.recording.on_takeover(live)
        self._seen, self._first_reconcile = None, True
        self._replaced_until, self._replacements = 0.0, 0
        self.holding.set()
        return True

    def _drop(self) -> None:
        """The lease is lost: write nothing more, close the websocket, forget the legs
        (the next takeover reloads them from the database), stand by."""
        self.holding.clear()
        self.lease.forget()
        self.recording.on_lost()
        self.tx.lost = False
        log.warning("%s: standing by: events websocket closed, not recording", self.name)

    def _finish(self) -> None:
        """At a stop: a last chance for a database failing right now, then release."""
        if self.lease.epoch is None:
            return
        for _ in range(3):
            if self.recording.flush() or self.tx.lost:
                break
            time.sleep(0.5)

        def with_release(work: Callable[[Session], None], what: str) -> None:
            def both(session: Session) -> None:
                work(session)
                self.lease.release(session)

            self.tx.run(both, what)

        # The last beat names no holder and gives the lease up, in one transaction.
        self.status.beat(with_release, self.recording.received, connected=False, release=True)
        self.holding.clear()
