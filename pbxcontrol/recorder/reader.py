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
        out: queue.SimpleQueue[Any],
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
            if not self.may_connect():
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
                if is_application_replaced(message):
                    log.warning(
                        "%s: another client took over our ARI application name: closing this "
                        "websocket and checking the lease",
                        self.name,
                    )
                    self.on_replaced()
                    self.out.put(REPLACED)
                    return True
                self.received += 1
                self.status.heard(self.received)
                self.out.put((self.received, message))
        except AriError as exc:
            if not self.stopping.is_set() and self.may_keep():  # not closed by a drop
                log.warning("%s: events connection lost (%s); reconnecting", self.name, exc)
                return False
        finally:
            self.stream = None
            stream.close()
            self.out.put(DISCONNECTED)
        return True
