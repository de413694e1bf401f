"""A machine's reader thread: the ARI events websocket, opened only while the lease is held."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from pbxcontrol.ari.client import Ari, AriError, EventStream
from pbxcontrol.ari.events import is_application_replaced
from pbxcontrol.recorder.status import Heartbeat

log = logging.getLogger("pbxcontrol.recorder")

CONNECTED = object()
DISCONNECTED = object()
REPLACED = object()  # another client opened a websocket with our application name
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
RECV_TIMEOUT = 0.5  # how often a quiet reader checks that it still holds the lease
#: Characters of messages read and not yet taken by the writer, at most (SPEC §12: bounded
#: under any backlog; `[recorder] backlog_megabytes`): ~2 minutes of a busy machine's events
#: (1,000/s of ~2 KB), and the realistic blast of 3,600 legs at once (bench/blast.py) read
#: faster than any writer takes it (64 MB was not enough for it on a quiet machine).
BACKLOG_LIMIT = 256 * 1024 * 1024


class Backlog:
    """The queue from the reader to the writer, bounded: the reader puts markers and
    (seq, message); a message that would take the queued characters past `limit` is not
    queued — the reader closes the websocket and sets `overflowed`, the writer drops what
    is queued (`discard`) and clears it, then the reader reconnects and the writer reconciles
    with Asterisk (its state, not the lost events, is what counts). Each counter is written
    by one thread only (`put_chars` the reader's, `got_chars` the writer's): no lock."""

    def __init__(self, limit: int = BACKLOG_LIMIT) -> None:
        self.limit = limit
        self.overflowed = threading.Event()
        self.put_chars = 0
        self.got_chars = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @property
    def size(self) -> int:
        """Characters of the messages queued now."""
        return self.put_chars - self.got_chars

    def put(self, item: Any) -> None:
        """A marker (CONNECTED, DISCONNECTED, REPLACED), or the intent worker's news of a
        recording (recorder/leg.py Recorded)."""
        self._queue.put(item)

    def fits(self, message: str) -> bool:
        return self.size + len(message) <= self.limit

    def put_message(self, seq: int, message: str) -> None:
        """Queue a message (the reader, once it `fits`)."""
        self.put_chars += len(message)
        self._queue.put((seq, message))

    def get(self, timeout: float | None = None) -> Any:
        return self._taken(self._queue.get(timeout=timeout))

    def get_nowait(self) -> Any:
        return self._taken(self._queue.get_nowait())

    def empty(self) -> bool:
        return self._queue.empty()

    def discard(self) -> int:
        """Drop everything queued (the writer); how many items."""
        dropped = 0
        while True:
            try:
                self.get_nowait()
            except queue.Empty:
                return dropped
            dropped += 1

    def _taken(self, item: Any) -> Any:
        if isinstance(item, tuple):
            self.got_chars += len(item[1])
        return item


class EventReader:
    """Reads the websocket into `queue` (CONNECTED, (seq, message)..., DISCONNECTED): opens it
    while `may_connect()` is true (the lease is held and was renewed recently) and keeps it
    while `may_keep()` is (held, not known lost, not in doubt for long: a slow commit or a late
    renewal closes nothing). A holder that loses the database closes its websocket by itself
    once its lease has surely been taken, and one that wakes up (SIGCONT) after a takeover reads
    the ApplicationReplaced that the new holder's connection caused, and closes it."""

    def __init__(
        self,
        ari: Ari,
        out: Backlog,
        status: Heartbeat,
        may_connect: Callable[[], bool],
        on_replaced: Callable[[], None],
        may_keep: Callable[[], bool],
        stopping: threading.Event,
        name: str,
    ):
        self.ari = ari
        self.out = out
        self.status = status
        self.may_connect = may_connect
        self.on_replaced = on_replaced  # called before reading on: may_connect() is then false
        self.may_keep = may_keep  # an open websocket stays open while true
        self.stopping = stopping
        self.name = name
        self.received = 0  # messages read from the websocket, a sequence number
        self.stream: EventStream | None = None

    def close(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.close()

    def run(self) -> None:
        delay, down_since = BACKOFF_START, None
        while not self.stopping.is_set():
            # After an overflow, the writer drops the backlog before anything new is read.
            if not self.may_connect() or self.out.overflowed.is_set():
                self.stopping.wait(0.05)
                continue
            try:
                stream = self.ari.open_events()
            except AriError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("%s: ARI unreachable (%s); retrying with backoff", self.name, exc)
                self.stopping.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            outage = f" after {time.monotonic() - down_since:.1f} s" if down_since else ""
            log.info("%s: events websocket connected%s", self.name, outage)
            delay, down_since = BACKOFF_START, None
            if not self._read(stream):
                down_since = time.monotonic()

    def _read(self, stream: EventStream) -> bool:
        """Read until the stream ends, the lease is in doubt or we stop; False when the
        connection was lost (a reconnect is an outage to time)."""
        self.stream = stream
        self.out.put(CONNECTED)  # the writer reconciles; events meanwhile queue up
        try:
            while not self.stopping.is_set():
                if not self.may_keep():
                    log.warning(
                        "%s: the lease is not confirmed: closing the events websocket", self.name
                    )
                    return True
                message = stream.recv(RECV_TIMEOUT)
                if message is None:
                    continue
                # The messages the same read brought come along: the lease above, and the
                # heartbeat's time below, once per read, not per message (a blast of small
                # events spent a tenth of the reader's time on them).
                queued = self._queue([message, *stream.buffered()])
                self.status.heard(self.received)
                if not queued:
                    return True
        except AriError as exc:
            if not self.stopping.is_set() and self.may_keep():  # not closed by a drop
                log.warning("%s: events connection lost (%s); reconnecting", self.name, exc)
                return False
        finally:
            self.stream = None
            stream.close()
            self.out.put(DISCONNECTED)
        return True

    def _queue(self, messages: list[str]) -> bool:
        """Queue the messages for the writer, in order; False when the websocket must close
        (ApplicationReplaced, or the writer too far behind)."""
        for message in messages:
            if is_application_replaced(message):
                log.warning(
                    "%s: another client took over our ARI application name: closing this "
                    "websocket and checking the lease",
                    self.name,
                )
                self.on_replaced()
                self.out.put(REPLACED)
                return False
            if not self.out.fits(message):
                log.warning(
                    "%s: the writer is %d MB of events behind (a slow database?): "
                    "closing the events websocket, dropping them and reconciling",
                    *(self.name, self.out.size // 2**20),
                )
                self.out.overflowed.set()
                return False
            self.received += 1
            self.out.put_message(self.received, message)
        return True
