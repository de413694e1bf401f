"""The writer's outer loop: stand by until the lease is ours, record, and stand by again
when it is lost; resync after a write the database refused; release the lease at a stop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from pbxcontrol.recorder import store
from pbxcontrol.recorder.lease import Holder, Lease
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.reader import EventReader
from pbxcontrol.recorder.status import Heartbeat
from pbxcontrol.recorder.transactions import Transactions

log = logging.getLogger("pbxcontrol.recorder")


class Standby:
    """Part of MachineRecorder (pbxcontrol.recorder.machine): what the writer thread does
    around `_record`."""

    name: str
    lease: Lease
    tx: Transactions
    live: LiveLegs
    status: Heartbeat
    reader: EventReader
    queue: queue.SimpleQueue[Any]
    stopping: threading.Event
    holding: threading.Event
    synced: threading.Event
    _needs_reconcile: bool
    _next_sweep: float
    _replaced_until: float
    _replacements: int
    _first_reconcile: bool = False
    _seen: Holder | None = None

    @property
    def received(self) -> int:
        raise NotImplementedError

    def _record(self) -> None:
        raise NotImplementedError

    def _flush(self, machine_row: bool = False) -> bool:
        raise NotImplementedError

    def _new_live(self) -> LiveLegs:
        raise NotImplementedError

    def _write_loop(self) -> None:
        while not self.stopping.is_set():
            if self.lease.epoch is None and not self._stand_by():
                break
            self._record()
            if self.tx.lost:
                self._drop()
        self._finish()

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
            self.stopping.wait(self.lease.poll_interval)
        return False

    def _take(self) -> bool:
        """Just took the lease: start from what the previous holder wrote (what it derived
        is kept), then let the reader connect (it reconciles)."""
        self.tx.lost = self.tx.refused = self.tx.back = False
        live = None
        while live is None and not self.stopping.is_set():
            live = self._load("loading the legs")
            if self.tx.lost:
                self._drop()
                return False
        if live is None:
            return False
        self.live, self._seen, self._first_reconcile = live, None, True
        self._discard_queue()
        self._replaced_until, self._replacements = 0.0, 0
        self._next_sweep = float("inf")
        self.holding.set()
        return True

    def _reconciled(self, live: int) -> None:
        if self._first_reconcile:
            self._first_reconcile = False
            log.info(
                "%s: recording (epoch %s): reconciled, %d live legs",
                *(self.name, self.lease.epoch, live),
            )

    def _drop(self) -> None:
        """The lease is lost: write nothing more, close the websocket, forget the legs
        (the next takeover reloads them from the database), stand by."""
        self.holding.clear()
        self.lease.forget()
        self.reader.close()
        self.synced.clear()
        self._discard_queue()
        self.live = self._new_live()
        self.tx.lost = False
        self.status.connected = False
        log.warning("%s: standing by: events websocket closed, not recording", self.name)

    def _resync(self) -> None:
        """After a write the database refused (a bug): rebuild the machine's legs from the
        database and Asterisk instead of retrying the same batch."""
        self.tx.refused = False
        live = self._load("reloading the legs")
        if live is None:
            self.tx.refused = not self.tx.lost  # retried at the next round
            return
        self.live = live
        self._needs_reconcile = True
        log.warning("%s: reloaded %d legs from the database", self.name, len(live.legs))

    def _load(self, what: str) -> LiveLegs | None:
        """The machine's legs as the database has them (fenced), or None."""
        live = self._new_live()
        return live if self.tx.run(lambda s: store.load(live, s), what) is not None else None

    def _finish(self) -> None:
        """At a stop: a last chance for a database failing right now, then release."""
        if self.lease.epoch is None:
            return
        for _ in range(3):
            if self._flush() or self.tx.lost:
                break
            time.sleep(0.5)

        def with_release(work: Callable[[Session], None], what: str) -> None:
            def both(session: Session) -> None:
                work(session)
                self.lease.release(session)

            self.tx.run(both, what)

        # The last beat names no holder and gives the lease up, in one transaction.
        self.status.beat(with_release, self.received, connected=False, release=True)
        self.holding.clear()

    def _discard_queue(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return
