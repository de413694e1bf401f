"""The recorder's heartbeat: who records a machine, is ARI connected, how busy it is."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy import literal
from sqlalchemy.orm import Session

from pbxcontrol.db import unrecorded
from pbxcontrol.db.clock import db_now
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

    def __init__(
        self,
        machine: int,
        name: str,
        interval: float = 2.0,
        holder: str = "",
        synced: threading.Event | None = None,
    ):
        self.machine = machine
        self.name = name
        self.interval = interval
        self.holder = holder or holder_name()
        # Set while the holder's legs are reconciled with Asterisk: only then may a beat say
        # they are recorded again (pbxcontrol.db.unrecorded.vouch). None: always.
        self.synced = synced
        self.connected = False
        # Set by the reader: this process's monotonic clock at the last websocket message. The
        # row gets the database's clock minus that message's age: hosts need not agree.
        self.last_event_mono = 0.0
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
        self.last_event_mono = time.monotonic()
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
        """The UPDATE, in `session`; after a reconcile, the legs are vouched for too."""
        now = time.monotonic()
        rate = 0.0
        if self._since is not None and now > self._since[0]:
            rate = (events - self._since[1]) / (now - self._since[0])
        self._since = (now, events)
        self._next = now + self.interval
        db_clock = db_now(session.get_bind().dialect.name)
        heard = self.last_event_mono
        values = {
            "holder": "" if release else self.holder,
            "connected": self.connected and not release,
            "heartbeat_at": db_clock,
            "last_event_at": db_clock - literal(now - heard) if heard else literal(0.0),
            "events_total": events,
            "events_per_second": round(rate, 2),
            "reconnects": max(0, self.connections - 1),
            "reconciles": self.reconciles,
            "corrections": self.corrections,
            "lag_seconds": round(self._lag, 6),
        }
        self._lag = 0.0
        store.heartbeat(session, self.machine, self.name, values)
        if not release and (self.synced is None or self.synced.is_set()):
            # A watch flagged the legs while this holder was silent (hung, cut off, slow):
            # reconciled since, they are recorded again. Usually one UPDATE matching nothing.
            unrecorded.vouch(session.connection(), self.machine)
