"""The recorder's heartbeat: who records a machine, is ARI connected, how busy it is."""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.orm import Session

from pbxcontrol.recorder import store


def holder_name() -> str:
    """This process, as `pbxcontrol status` names the holder of a machine: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """One machine's status row, written by its recorder's writer thread (one UPDATE) every
    `interval` seconds and at once when the ARI websocket comes or goes. Written by the writer,
    not a thread of its own: a writer that hangs stops beating, and shows as stale.

    The row is also the machine's lease (pbxcontrol.recorder.lease): the beat runs in a
    fenced transaction, so only the holder of the current epoch writes it; the lease itself is
    renewed by recorder/renewer.py (while this writer is alive). A standby writes nothing here;
    it logs "standby, holder host:pid (epoch N)"."""

    def __init__(self, machine: int, name: str, interval: float = 2.0, holder: str = ""):
        self.machine = machine
        self.name = name
        self.interval = interval
        self.holder = holder or holder_name()
        self.connected = False
        self.last_event_at = 0.0  # set by the reader: Unix time of the last websocket message
        self._next = 0.0  # monotonic time of the next beat
        self._since: tuple[float, int] | None = None  # (monotonic, events) at the last beat
        # For GET /metrics: websocket connections, reconciles and the legs they corrected,
        # and the read-to-commit lag (`heard` by the reader, `committed` by the writer).
        self.connections = self.reconciles = self.corrections = 0
        self.applied = 0  # the last event sequence number the writer applied
        self._read: deque[tuple[int, float]] = deque()  # (seq, monotonic) not yet committed
        self._lag = 0.0  # the longest read-to-commit time since the last beat

    def beat(
        self,
        with_db: Callable[[Callable[[Session], None], str], object],
        events: int,
        connected: bool | None = None,
        release: bool = False,
    ) -> None:
        """Write the row through `with_db` (one transaction) when the interval has passed or
        the connection changed (`connected` given); `events` counts the websocket messages
        read since the recorder started. After a `release` the row names no holder: the
        recorder stopped cleanly."""
        if connected is not None:
            if connected and not self.connected:
                self.connections += 1
            self.connected = connected
        elif time.monotonic() < self._next:
            return
        with_db(lambda session: self.write(session, events, release), "heartbeat")

    def heard(self, seq: int) -> None:
        """The reader read event `seq` from the websocket (its thread)."""
        self.last_event_at = time.time()
        self._read.append((seq, time.monotonic()))

    def committed(self) -> None:
        """The writer committed every event up to `applied` (its thread)."""
        now = time.monotonic()
        while self._read and self._read[0][0] <= self.applied:
            self._lag = max(self._lag, now - self._read.popleft()[1])

    def reconciled(self, corrections: int) -> None:
        self.reconciles += 1
        self.corrections += corrections

    def write(self, session: Session, events: int, release: bool = False) -> None:
        """The UPDATE, in `session`."""
        now = time.monotonic()
        rate = 0.0
        if self._since is not None and now > self._since[0]:
            rate = (events - self._since[1]) / (now - self._since[0])
        self._since = (now, events)
        self._next = now + self.interval
        values = {
            "holder": "" if release else self.holder,
            "connected": self.connected and not release,
            "heartbeat_at": time.time(),
            "last_event_at": self.last_event_at,
            "events_total": events,
            "events_per_second": round(rate, 2),
            "reconnects": max(0, self.connections - 1),
            "reconciles": self.reconciles,
            "corrections": self.corrections,
            "lag_seconds": round(self._lag, 6),
        }
        self._lag = 0.0
        store.heartbeat(session, self.machine, self.name, values)
