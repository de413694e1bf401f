"""SQLite: the write-ahead log's checkpoints on a thread of their own, not in the writer's commits.

SQLite checkpoints the WAL into the database file inside the commit that takes the log past
1,000 pages (`wal_autocheckpoint`), and with `synchronous=NORMAL` that checkpoint is where the
fsync happens. With the recorder as the writer, that commit is one of its batches: measured,
commits took 0.14 ms at the median and 10-18 ms each time one checkpointed (three quarters of
all commit time), longer on a busy disk, and every event read meanwhile waited for it. So
the recorder's connections do not checkpoint (`wal_autocheckpoint = 0`, set once per
connection) and a thread runs a PASSIVE checkpoint every `interval`: it copies what no reader
still needs while the writer goes on appending, and its fsync waits on that thread only
(sqlite3 lets go of the GIL in it). Connections that are not the recorder's keep SQLite's
automatic checkpoints.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("pbxcontrol.recorder")

INTERVAL = 0.5  # seconds between checkpoints: the log stays around a second of writes
_MARK = "pbxcontrol_no_autocheckpoint"


def no_autocheckpoint(conn: Connection) -> None:
    """This (pooled) SQLite connection leaves checkpoints to the Checkpointer."""
    if conn.dialect.name != "sqlite" or conn.info.get(_MARK):
        return
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
    conn.info[_MARK] = True


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` every `interval` until `stopping` is set."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stopping: threading.Event,
        name: str,
        interval: float = INTERVAL,
    ):
        self.sessions = sessions
        self.stopping = stopping
        self.name = name
        self.interval = interval
        self.runs = 0
        self._failing = False

    def needed(self) -> bool:
        bind = getattr(self.sessions, "kw", {}).get("bind")  # tests wrap the factory
        return bind is not None and bind.dialect.name == "sqlite"

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.checkpoint()
        self.checkpoint()  # what the last batches wrote, before the process ends

    def checkpoint(self) -> None:
        try:
            with self.sessions() as session:
                conn = session.connection()
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                session.rollback()  # nothing was written; ends SQLAlchemy's transaction
        except SQLAlchemyError as exc:  # the writer sees database outages and says so
            if not self._failing:
                log.warning("%s: WAL checkpoint failed: %s", self.name, str(exc).splitlines()[0])
            self._failing = True
            return
        self._failing = False
        self.runs += 1
