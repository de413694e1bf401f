"""The soak's database, on either engine: a SQLite file, or a PostgreSQL primary and its
streaming standby of the soak's own (tests/pgpair.py) named by the multi-host URL, so that the
soak can fail it over. What the faults do to it: take it away and bring it back (a start
without the database), fail it over (PostgreSQL), check it at the end."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.pgpair import Cluster, Pair


class SqliteDatabase:
    """One SQLite file in a directory of its own (taken away by renaming the directory: the
    storage not mounted yet)."""

    engine = "sqlite"

    def __init__(self, work: Path) -> None:
        (work / "db").mkdir()
        self.path = work / "db" / "pbx.db"
        self.url = f"sqlite:///{self.path}"
        self._away = self.path.parent.with_name("db.away")

    def away(self) -> None:
        os.rename(self.path.parent, self._away)

    def back(self) -> None:
        os.rename(self._away, self.path.parent)

    def integrity(self) -> str:
        with sqlite3.connect(self.path) as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        pass


class PostgresPair:
    """A primary and its streaming standby; after `failover()` the promoted standby alone."""

    engine = "postgresql"

    def __init__(self) -> None:
        self.pair = Pair().start()
        self.url = self.pair.url
        self.promoted = False

    @property
    def server(self) -> Cluster:
        """The server that takes writes now."""
        return self.pair.standby if self.promoted else self.pair.primary

    def failover(self) -> None:
        """The primary freezes (SIGSTOP: its connections stay open and nothing answers, as
        when its host dies) and the standby is promoted."""
        self.pair.caught_up()
        self.pair.freeze()
        self.pair.promote()
        self.promoted = True

    def away(self) -> None:
        """The server that takes writes stops (fast: its clients are told)."""
        server = self.server
        server.run("pg_ctl", "stop", "-D", str(server.data), "-m", "fast")
        server.pid = 0

    def back(self) -> None:
        self.server.start()

    def integrity(self) -> str:
        """Not PRAGMA integrity_check: the journal's entries all below the sequence's value
        (after a failover the sequence moved on past anything the old primary handed out)."""
        [(last, top)] = self.server.sql(
            "SELECT last_value, (SELECT max(id) FROM leg_changes) FROM leg_changes_ids", "pbx"
        )
        return "ok" if top is None or top <= last else f"journal id {top} > sequence {last}"

    def close(self) -> None:
        self.pair.close()
