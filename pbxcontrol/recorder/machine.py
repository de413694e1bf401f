"""One machine's recorder: stand by until it holds the machine's lease, then record it (a reader
thread on the ARI websocket, a writer thread on SQL) until it stops or loses the lease."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.ari.channel import LINKEDID_VAR, MalformedEvent
from pbxcontrol.ari.client import Ari, AriError
from pbxcontrol.ari.events import parse_event
from pbxcontrol.liveness import Pulse
from pbxcontrol.recorder import store
from pbxcontrol.recorder.actions import ControlAri
from pbxcontrol.recorder.checkpoint import Checkpointer
from pbxcontrol.recorder.intents import IntentWorker
from pbxcontrol.recorder.lease import Lease
from pbxcontrol.recorder.leg import Recorded
from pbxcontrol.recorder.live import Changes, LiveLegs
from pbxcontrol.recorder.provisioned import ProvisionedCache
from pbxcontrol.recorder.reader import (
    BACKLOG_LIMIT,
    CONNECTED,
    DISCONNECTED,
    REPLACED,
    Backlog,
    EventReader,
)
from pbxcontrol.recorder.renewer import Renewer
from pbxcontrol.recorder.retention import Retention
from pbxcontrol.recorder.standby import Standby
from pbxcontrol.recorder.status import Heartbeat, holder_name
from pbxcontrol.recorder.transactions import Transactions

log = logging.getLogger("pbxcontrol.recorder")

#: Most time the writer spends applying events before it writes them (with `batch_size`, the
#: most events): a burst's first events wait at most this long for their commit.
BATCH_SECONDS = 0.25


class MachineRecorder:
    """Keeps the legs of one machine equal to its channels, across reconnects, restarts and
    takeovers; only while it holds the machine's lease (pbxcontrol.recorder.lease). Its
    `standby` (recorder/standby.py) runs the writer thread: takes the lease, has this record,
    and gives the lease up, through the verbs of `standby.Recording`."""

    def __init__(
        self,
        machine: int,
        ari: Ari,
        sessions: sessionmaker[Session],
        *,
        sweep_interval: float = 60.0,
        batch_size: int = 200,
        history_days: int = 0,
        audit_days: int = 0,
        provisioned: ProvisionedCache | None = None,
        name: str = "",
        heartbeat: float = 2.0,
        journal_seconds: float = 600.0,
        takeover: float = 5.0,
        holder: str = "",
        on_commit: Callable[[], None] | None = None,
        backlog: int = BACKLOG_LIMIT,
        control: ControlAri | None = None,
        wake: threading.Event | None = None,
    ):
        self.machine, self.ari = machine, ari
        self.sweep_interval, self.batch_size = sweep_interval, batch_size
        self.retention = Retention(history_days, journal_seconds, audit_days)
        self.name = name or f"machine {machine}"
        self.cache = provisioned or ProvisionedCache(sessions)
        self.live = self._new_live()
        holder = holder or holder_name()
        self.lease = Lease(machine, holder, takeover, self.name)
        self.synced = threading.Event()  # set by each reconcile; cleared when the websocket goes
        # The heartbeat renews the lease too: at least every third of the takeover time.
        beat = min(heartbeat, takeover / 3)
        self.status = Heartbeat(machine, self.name, beat, holder, synced=self.synced)
        self.queue = Backlog(backlog)  # the reader's to the writer, bounded
        self.stopping, self.malformed = threading.Event(), 0
        # After each commit (under serve: the hub's wake-up).
        self.on_commit: Callable[[], None] = on_commit or (lambda: None)
        self.tx = Transactions(sessions, self.lease, self.name, self.stopping, Pulse())
        self.standby = Standby(self, self.lease, self.tx, self.status, self.stopping, self.name)
        self.renewer = Renewer(sessions, self.lease, self.stopping)
        gates = (self.standby.may_connect, self.standby.replaced, self.standby.may_keep)
        self.reader = EventReader(ari, self.queue, self.status, *gates, self.stopping, self.name)
        self.intents = None if control is None else self._intent_worker(control, wake)
        self._threads: list[threading.Thread] = []
        self._reader_done = threading.Event()
        self._needs_reconcile, self._next_sweep = False, float("inf")
        self._postgresql = sessions.kw["bind"].dialect.name == "postgresql"

    def _intent_worker(self, control: ControlAri, wake: threading.Event | None) -> IntentWorker:
        """Call control (SPEC §11.2): on its own ARI client, so a slow action never holds the
        reconcile's, and on its own thread, so it never holds the writer."""
        return IntentWorker(
            self.machine,
            control,
            self.tx.sessions,
            self.lease,
            self.standby.holding,
            self.stopping,
            wake or threading.Event(),
            self.name,
            note=self.queue.put,  # the writer applies it in order with the events
        )

    @property
    def received(self) -> int:
        """Messages read from the websocket since the recorder started."""
        return self.reader.received

    def alive(self, bound: float) -> bool:
        """For the watchdog: the writer thread runs and is not stuck — it works for less than
        `bound` seconds at a time, between waits for events, the lease or the database."""
        return self.stopping.is_set() or not self.tx.pulse.stuck(bound)

    @property
    def holding(self) -> threading.Event:
        """Set while this process records the machine (it holds the lease)."""
        return self.standby.holding

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        roles = [
            (self.reader.run, "reader"),
            (self.standby.run, "writer"),
            (self.renewer.run, "lease"),
        ]
        if self.intents is not None:
            roles.append((self.intents.run, "intents"))
        checkpointer = Checkpointer(self.tx.sessions, self.stopping, self.name)
        if checkpointer.needed():
            roles.append((checkpointer.run, "checkpoints"))
        for target, role in roles:
            thread = threading.Thread(
                target=self._supervised,
                args=(target, role),
                name=f"{self.name} {role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, then write everything already read and release the lease."""
        self.stopping.set()
        self.reader.close()
        if self.intents is not None:
            self.intents.wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _supervised(self, loop: Callable[[], None], role: str) -> None:
        """A bug in a loop must not silently end recording: log it, resync, go on."""
        try:
            while True:
                try:
                    loop()
                    return
                except Exception:
                    log.exception("%s: %s failed; restarting it and resyncing", self.name, role)
                    self._needs_reconcile = True
                    if self.stopping.wait(1.0) and role == "reader":
                        return
        finally:
            if role == "reader":
                self._reader_done.set()  # the writer then drains what was read, and ends
            elif role == "writer":
                self.tx.close()  # its kept connection (PostgreSQL), from its own thread

    # -- writer: what the standby drives (standby.Recording) ------------------------------
    def on_takeover(self, live: LiveLegs) -> None:
        """The standby took the lease and loaded `live`: record from them, nothing read
        before, and no sweep until the first reconcile."""
        self.live = live
        self._discard_queue()
        self._next_sweep = float("inf")

    def on_lost(self) -> None:
        """The standby lost the lease: close the websocket, forget the legs (the next
        takeover reloads them from the database) and what was read."""
        self.reader.close()
        self.synced.clear()
        self._discard_queue()
        self.live = self._new_live()
        self.status.connected = False

    def load(self, what: str) -> LiveLegs | None:
        """The machine's legs as the database has them (fenced), or None."""
        live = self._new_live()
        return live if self.tx.run(lambda s: store.load(live, s), what) is not None else None

    def record(self) -> None:
        """Record until stopped (drain what was read) or the lease is lost."""
        while not self.tx.lost and not (self._reader_done.is_set() and self.queue.empty()):
            self.lease.progress()  # the renewer renews for a writer that goes round
            if self.queue.overflowed.is_set():
                self._overflowed()
            timeout = max(0.0, min(self._next_sweep - time.monotonic(), self.status.interval, 0.5))
            self._take(timeout)
            if self.tx.refused:
                self._resync()
            elif self.tx.back:
                self.tx.back, self._needs_reconcile = False, True
            if not self.stopping.is_set() and (
                self._needs_reconcile or time.monotonic() >= self._next_sweep
            ):
                if not self._needs_reconcile:
                    self._drain()  # a sweep: first catch up with everything already read
                    self.prune_history()
                self._sync()
            self.flush()
            self.status.beat(self.tx, self.received)

    # -- writer: recording while holding -------------------------------------------------
    def _take(self, timeout: float) -> None:
        """Apply what was read, one write's worth: everything queued, up to `batch_size`
        events or BATCH_SECONDS of applying, whichever comes first. Quiet, a write follows
        each event at once; in a burst a leg's many events share one row write (and the API
        one re-read of it) instead of one per small batch."""
        try:
            with self.tx.pulse.waiting():
                item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return
        until, taken = time.monotonic() + BATCH_SECONDS, 0
        while True:
            self.lease.progress()
            self._handle(item)
            taken += 1
            if taken >= self.batch_size or (taken % 64 == 0 and time.monotonic() >= until):
                return
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: Any) -> None:
        if item is CONNECTED:
            # Asterisk replays nothing: re-read its state now; the events read since the
            # socket opened (the rest of the queue) are applied after the snapshot.
            self._needs_reconcile = True
            self._sync()
            self.status.beat(self.tx, self.received, connected=True)
        elif item is DISCONNECTED:
            self._next_sweep = float("inf")
            self.synced.clear()  # events may be missed until the next reconcile
            self.status.beat(self.tx, self.received, connected=False)
        elif item is REPLACED:
            self.status.beat(self.tx, self.received, connected=False)  # is the lease ours?
        elif isinstance(item, Recorded):  # the intent worker's (recorder/recording.py)
            self.live.recorded(item)
        else:
            self._apply(*item)

    def _overflowed(self) -> None:
        """The reader found the backlog full and closed the websocket: what was read is
        dropped (a reconcile after the reconnect makes the legs Asterisk's again)."""
        dropped = self.queue.discard()
        log.warning("%s: dropped %d events read and not written", self.name, dropped)
        self._next_sweep = float("inf")
        self.synced.clear()
        self.queue.overflowed.clear()  # the reader reconnects: CONNECTED, then a reconcile
        self.status.beat(self.tx, self.received, connected=False)

    def _drain(self, most: int = 100_000) -> None:
        for _ in range(most):
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _sync(self) -> None:
        if self.stopping.is_set() or self.tx.lost:
            return
        self.flush()  # what was applied before the snapshot is older than it
        if self._reconcile():
            self._next_sweep = time.monotonic() + self.sweep_interval

    def _apply(self, seq: int, message: str) -> None:
        self.status.applied = seq
        try:
            event = parse_event(message)
        except MalformedEvent as exc:
            self.malformed += 1
            log.warning("%s: skipping malformed event: %s", self.name, exc)
            return
        if event is not None:
            try:
                self.live.apply(event, seq)
            except Exception:  # one bad event must not stop the recorder
                self.malformed += 1
                log.exception(
                    "%s: could not apply %s event; skipped", self.name, type(event).__name__
                )

    def _reconcile(self) -> bool:
        sent, before = self.received, set(self.live.legs)
        try:
            with self.lease.busy():  # 20,000 channels take a while: still alive
                info = self.ari.info()
                channels = self.ari.channels()
            live, ended = self.live.reconcile(info, channels, sent, time.time())
        except AriError as exc:
            log.warning("%s: reconcile failed (%s); will retry", self.name, exc)
            self._needs_reconcile = True
            self.tx.pulse.wait(self.stopping, 1.0)
            return False
        self._needs_reconcile = False
        if self.flush(machine_row=True):
            log.debug("%s: reconciled: %d live legs, %d ended", self.name, live, ended)
            self.status.reconciled(ended + len(self.live.legs.keys() - before))
            self.standby.reconciled(live)
            self.synced.set()
            return True
        return False

    def flush(self, machine_row: bool = False) -> bool:
        """Write what was applied since the last commit; False when it did not commit."""

        changes = self.live.changes()
        if not machine_row and changes.empty and self.lease.valid():
            # Nothing to write and the lease trusted: no transaction. (An empty fenced one
            # after every event that changed no row — most of a call's — was a recorder's
            # busiest work in a busy hour.) In doubt, the fence below finds out.
            self._committed(changes)
            return True
        batch = store.prepare(changes, self.machine, self._postgresql)  # before it begins
        startup = self.live.startup_time or ""

        def write(session: Session) -> bool:
            store.write_prepared(batch, session.connection())
            if machine_row:  # last: the renewal waits for the row's lock until the commit
                store.mark_synced(session, self.machine, self.name, startup)
            return True

        if self._postgresql and not machine_row:  # the fence in the first statement
            done = self.tx.run_kept(
                lambda conn, fence: store.write_prepared(batch, conn, fence), "writing legs"
            )
        else:
            done = self.tx.run(write, "writing legs") is not None
        if not done:
            return False
        self._committed(changes)
        self.on_commit()
        return True

    def _committed(self, changes: Changes) -> None:
        changes.committed()
        self.status.committed()

    def prune_history(self, now: float | None = None) -> int:
        """A sweep's pruning (recorder/retention.py): the journal, the audit when due, and
        this machine's history rows that ended more than `history_days` ago. Returns how many
        history rows went."""
        return self.retention.prune(self.tx, self.machine, self.name, now or time.time())

    def _resync(self) -> None:
        """After a write the database refused (a bug): rebuild the machine's legs from the
        database and Asterisk instead of retrying the same batch."""
        self.tx.refused = False
        live = self.load("reloading the legs")
        if live is None:
            self.tx.refused = not self.tx.lost  # retried at the next round
            return
        self.live = live
        self._needs_reconcile = True
        log.warning("%s: reloaded %d legs from the database", self.name, len(live.legs))

    def _new_live(self) -> LiveLegs:
        return LiveLegs(self.machine, self.cache.get, self._linkedid)

    def _discard_queue(self) -> None:
        self.queue.discard()

    def _linkedid(self, channel_id: str) -> str | None:
        """Without `channelvars = CHANNEL(linkedid)` in ari.conf: one REST read per channel."""
        try:
            return self.ari.variable(channel_id, LINKEDID_VAR)
        except AriError:
            return None
