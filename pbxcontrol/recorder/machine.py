"""One machine's connection: a reader thread on the ARI websocket, a writer thread on SQL."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.ari.channel import LINKEDID_VAR, MalformedEvent
from pbxcontrol.ari.client import Ari, AriError, EventStream
from pbxcontrol.ari.events import parse_event
from pbxcontrol.recorder import store
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.provisioned import ProvisionedCache
from pbxcontrol.recorder.status import Heartbeat

log = logging.getLogger("pbxcontrol.recorder")

CONNECTED = object()
DISCONNECTED = object()
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
PRUNE_CHUNK, PRUNE_CHUNKS = 5000, 10  # history rows deleted per transaction, per sweep
T = TypeVar("T")


class MachineRecorder:
    """Keeps the legs of one machine equal to its channels, across reconnects and restarts."""

    def __init__(
        self,
        machine: int,
        ari: Ari,
        sessions: sessionmaker[Session],
        *,
        sweep_interval: float = 60.0,
        batch_size: int = 200,
        history_days: int = 0,
        provisioned: ProvisionedCache | None = None,
        name: str = "",
        heartbeat: float = 2.0,
        journal_seconds: float = 600.0,
    ):
        self.machine = machine
        self.ari = ari
        self.sessions = sessions
        self.sweep_interval = sweep_interval
        self.batch_size = batch_size
        self.history_days = history_days  # 0 = keep the history of ended legs forever
        self.journal_seconds = journal_seconds  # how long the change journal keeps entries
        self.name = name or f"machine {machine}"
        self.cache = provisioned or ProvisionedCache(sessions)
        self.live = LiveLegs(machine, self.cache.get, self._linkedid)
        self.status = Heartbeat(machine, self.name, heartbeat)
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.received = 0  # messages read from the websocket, a sequence number
        self.stopping = threading.Event()
        self.synced = threading.Event()  # set after each successful reconcile
        self.malformed = 0
        self._stream: EventStream | None = None
        self._threads: list[threading.Thread] = []
        self._needs_reconcile = False
        self._db_failing_since: float | None = None
        self._reader_done = threading.Event()
        self._next_sweep = float("inf")

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        for target, role in ((self._read_loop, "reader"), (self._write_loop, "writer")):
            thread = threading.Thread(
                target=self._supervised,
                args=(target, role),
                name=f"{self.name} {role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, then write everything already read before returning."""
        self.stopping.set()
        stream = self._stream
        if stream is not None:
            stream.close()
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

    # -- reader --------------------------------------------------------------------------
    def _read_loop(self) -> None:
        delay, down_since = BACKOFF_START, None
        while not self.stopping.is_set():
            try:
                stream = self.ari.open_events()
            except AriError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("%s: ARI unreachable (%s); retrying with backoff", self.name, exc)
                self.stopping.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._stream = stream
            outage = f" after {time.monotonic() - down_since:.1f} s" if down_since else ""
            log.info("%s: events websocket connected%s", self.name, outage)
            delay, down_since = BACKOFF_START, None
            self.queue.put(CONNECTED)  # the writer reconciles; events meanwhile queue up
            try:
                while not self.stopping.is_set():
                    message = stream.recv(1.0)
                    if message is not None:
                        self.received += 1
                        self.status.last_event_at = time.time()
                        self.queue.put((self.received, message))
            except AriError as exc:
                if not self.stopping.is_set():
                    log.warning("%s: events connection lost (%s); reconnecting", self.name, exc)
                    down_since = time.monotonic()
            finally:
                self._stream = None
                stream.close()
                self.queue.put(DISCONNECTED)

    # -- writer --------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while (
            not self.stopping.is_set()
            and self._with_db(lambda session: store.load(self.live, session), "loading") is None
        ):
            pass
        self._next_sweep = float("inf")
        # On stop, the reader ends first; what it queued is still applied and written.
        while not (self._reader_done.is_set() and self.queue.empty()):
            timeout = max(0.0, min(self._next_sweep - time.monotonic(), 1.0))
            batch: list[Any] = []
            try:
                batch.append(self.queue.get(timeout=timeout))
                while len(batch) < self.batch_size:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            for item in batch:
                self._handle(item)
            if not self.stopping.is_set() and (
                self._needs_reconcile or time.monotonic() >= self._next_sweep
            ):
                if not self._needs_reconcile:
                    self._drain()  # a sweep: first catch up with everything already read
                    self.prune_history()
                self._sync()
            self._flush()
            self.status.beat(self._with_db, self.received)  # for `pbxcontrol status`
        for _ in range(3):  # a last chance for a database that is failing right now
            if self._flush():
                break
            time.sleep(0.5)
        self.status.beat(self._with_db, self.received, connected=False, release=True)

    def _handle(self, item: Any) -> None:
        if item is CONNECTED:
            # Asterisk replays nothing: re-read its state now; the events read since the
            # socket opened (the rest of the queue) are applied after the snapshot.
            self._needs_reconcile = True
            self._sync()
            self.status.beat(self._with_db, self.received, connected=True)
        elif item is DISCONNECTED:
            self._next_sweep = float("inf")
            self.status.beat(self._with_db, self.received, connected=False)
        else:
            self._apply(*item)

    def _drain(self, most: int = 100_000) -> None:
        for _ in range(most):
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _sync(self) -> None:
        if self.stopping.is_set():
            return
        self._flush()  # what was applied before the snapshot is older than it
        if self._reconcile():
            self._next_sweep = time.monotonic() + self.sweep_interval

    def _apply(self, seq: int, message: str) -> None:
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
        sent = self.received
        try:
            info = self.ari.info()
            channels = self.ari.channels()
            live, ended = self.live.reconcile(info, channels, sent, time.time())
        except AriError as exc:
            log.warning("%s: reconcile failed (%s); will retry", self.name, exc)
            self._needs_reconcile = True
            self.stopping.wait(1.0)
            return False
        self._needs_reconcile = False
        if self._flush(machine_row=True):
            log.debug("%s: reconciled: %d live legs, %d ended", self.name, live, ended)
            self.synced.set()
            return True
        return False

    def _flush(self, machine_row: bool = False) -> bool:
        def write(session: Session) -> Callable[[], None]:
            done = store.flush(self.live, session)
            if machine_row:
                store.mark_synced(session, self.machine, self.name, self.live.startup_time or "")
            return done

        done = self._with_db(write, "writing legs")
        if done is None:
            return False
        done()
        return True

    def _with_db(self, work: Callable[[Session], T], what: str) -> T | None:
        """Run `work(session)` in one transaction; on failure keep everything in memory and
        let the next round retry (and resync from Asterisk once the database is back)."""
        try:
            with self.sessions.begin() as session:
                result = work(session)
        except SQLAlchemyError as exc:
            if self._db_failing_since is None:
                self._db_failing_since = time.monotonic()
                log.error(
                    "%s: database error while %s (%s); retrying",
                    self.name,
                    what,
                    str(exc).splitlines()[0],
                )
            self.stopping.wait(min(5.0, 0.2 + time.monotonic() - self._db_failing_since))
            return None
        if self._db_failing_since is not None:
            log.info(
                "%s: database back after %.1f s; resyncing",
                self.name,
                time.monotonic() - self._db_failing_since,
            )
            self._db_failing_since = None
            self._needs_reconcile = True
        return result

    def prune_history(self, now: float | None = None) -> int:
        """Delete this machine's history rows that ended more than `history_days` ago, in
        short transactions (store.prune_old), and the change journal's old entries. Returns
        how many history rows went."""
        now = now or time.time()
        store.prune_journal(self._with_db, now - self.journal_seconds, PRUNE_CHUNK)
        if not self.history_days:
            return 0
        cutoff = now - self.history_days * 86400
        total = store.prune_old(self._with_db, self.machine, cutoff, PRUNE_CHUNK, PRUNE_CHUNKS)
        log.debug(
            "%s: pruned %d history rows older than %d days", self.name, total, self.history_days
        )
        return total

    def _linkedid(self, channel_id: str) -> str | None:
        """Without `channelvars = CHANNEL(linkedid)` in ari.conf: one REST read per channel."""
        try:
            return self.ari.variable(channel_id, LINKEDID_VAR)
        except AriError:
            return None
