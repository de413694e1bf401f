"""PostgreSQL: the stream hub woken by NOTIFY when a commit wrote journal entries.

One connection per API process LISTENs. A listening connection only reads, so a server that
died without a word (frozen, its host gone) would leave it waiting for ever while the hub
polls once a second: after `PING` seconds without a notice it sends a ping, under the round
trip deadline (pbxcontrol.db.deadline), and on failure connects again — to the promoted
standby after a failover (the URL's hosts are tried in turn).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from pbxcontrol.db import deadline, journal
from pbxcontrol.db.engine import ping
from pbxcontrol.db.outage import describe

log = logging.getLogger("pbxcontrol.http")

PING = 5.0  # seconds without a notice before the connection is checked
DEADLINE = 5.0  # seconds a ping (or the LISTEN) may take


class Notices:
    """Calls `wake()` on each NOTIFY on journal.CHANNEL until `stop` is set."""

    def __init__(self, engine: Engine, wake: Callable[[], None], stop: threading.Event) -> None:
        self.engine = engine
        self.wake = wake
        self.stop = stop
        self.connections = 0  # LISTEN connections made (tests look)
        self._failing = False

    def start(self) -> None:
        threading.Thread(target=self.run, name="stream listen", daemon=True).start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                raw = self.engine.raw_connection()
                try:
                    self._listen(raw.driver_connection)
                finally:
                    raw.invalidate()
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "stream hub: LISTEN failed (%s); polling every second until it is back",
                        describe(exc),
                    )
                self._failing = True
                self.stop.wait(1.0)

    def _listen(self, pg: Any) -> None:
        pg.autocommit = True
        with deadline.watcher.bound(pg, DEADLINE):
            pg.execute(f"LISTEN {journal.CHANNEL}")
        self.connections += 1
        if self._failing:
            self._failing = False
            log.info("stream hub: listening again")
        self.wake()  # what was committed while nobody listened
        while not self.stop.is_set():
            heard = False
            for _ in pg.notifies(timeout=PING, stop_after=1):
                heard = True
                self.wake()
            if not heard and not self.stop.is_set():
                with deadline.watcher.bound(pg, DEADLINE):
                    ping(pg)
