"""SQLite's WAL checkpoints run on the recorder's checkpoint thread, not in its commits."""

from __future__ import annotations

import threading

from sqlalchemy import insert
from sqlalchemy.pool import StaticPool

from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine, make_sessionmaker
from pbxcontrol.db.models import LEGS_TABLE
from pbxcontrol.recorder.checkpoint import Checkpointer
from pbxcontrol.recorder.lease import Lease
from pbxcontrol.recorder.transactions import Transactions
from tests.conftest import sqlite_only


def wal_frames(sessions) -> tuple[int, int]:
    """(frames in the WAL, frames of it already copied into the database file)."""
    with sessions() as session:
        _busy, log, done = (
            session.connection().exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        )
        session.rollback()
    return log, done


@sqlite_only("the WAL and its checkpoints are SQLite's")
def test_the_writer_commits_without_checkpointing_and_the_checkpointer_catches_up(db_url):
    engine = make_engine(db_url, poolclass=StaticPool)  # one connection: the writer's
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    stopping = threading.Event()
    lease = Lease(1, "test:1", takeover=5.0)
    tx = Transactions(sessions, lease, "machine 1", stopping)
    assert tx.run(lambda s: lease.ensure_row(s, "machine 1"), "row", fenced=False) is None
    assert tx.run(lease.try_acquire, "lease", fenced=False)

    rows = [{"machine": 1, "uniqueid": f"u{i}", "channel": "x" * 200} for i in range(20_000)]
    for start in range(0, len(rows), 1000):  # well past SQLite's 1,000-page autocheckpoint
        tx.run(lambda s, b=rows[start : start + 1000]: s.execute(insert(LEGS_TABLE), b), "w")
    with sessions() as session:
        assert session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        session.rollback()

    checkpointer = Checkpointer(sessions, stopping, "machine 1")
    assert checkpointer.needed()
    stopping.set()
    checkpointer.run()  # stopping: one last checkpoint, then it returns
    log, done = wal_frames(sessions)
    assert checkpointer.runs == 1 and log > 1000 and done == log
    engine.dispose()


def test_there_is_no_checkpoint_thread_on_postgresql(sessions):
    checkpointer = Checkpointer(sessions, threading.Event(), "machine 1")
    engine = sessions.kw["bind"]
    assert checkpointer.needed() == (engine.dialect.name == "sqlite")
