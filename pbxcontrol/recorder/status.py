"""The recorder's heartbeat: who records a machine, is ARI connected, how busy it is."""

from __future__ import annotations

import os
import socket
import time
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
    fenced transaction, so it renews the lease, and only the holder of the current epoch
    writes it. A standby writes nothing here; it logs "standby, holder host:pid (epoch N)"."""

    def __init__(self, machine: int, name: str, interval: float = 2.0, holder: str = ""):
        self.machine = machine
        self.name = name
        self.interval = interval
        self.holder = holder or holder_name()
        self.connected = False
        self.last_event_at = 0.0  # set by the reader: Unix time of the last websocket message
        self._next = 0.0  # monotonic time of the next beat
        self._since: tuple[float, int] | None = None  # (monotonic, events) at the last beat

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
            self.connected = connected
        elif time.monotonic() < self._next:
            return
        with_db(lambda session: self.write(session, events, release), "heartbeat")

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
        }
        store.heartbeat(session, self.machine, self.name, values)
