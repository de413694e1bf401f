"""Shutdown and storage faults: stop during ingest, kill -9, read-only and full databases."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import textwrap
import time

from sqlalchemy import event, text

from pbxcontrol.db.engine import make_engine
from pbxcontrol.recorder.machine import MachineRecorder
from tests.conftest import sqlite_only
from tests.databases import password_url
from tests.fakeari import FakeAri
from tests.recorder.conftest import live_rows
from tests.recorder.test_fields import events_of
from tests.recorder.test_reconnect import converged, wait_until

SCENARIOS = [
    "trunk_to_phone_answered",
    "ring_group_local",
    "phone_to_trunk_answered",
    "attended_transfer",
    "mixmonitor",
]


def many_events(copies: int) -> list[dict]:
    """Real recorded calls, many copies with fresh ids, interleaved like a busy machine."""
    calls = [events_of(name, f"-{n}") for n in range(copies) for name in SCENARIOS]
    stream, cursors = [], [0] * len(calls)
    rng = random.Random(7)
    live = list(range(len(calls)))
    while live:
        i = rng.choice(live)
        stream.append(calls[i][cursors[i]])
        cursors[i] += 1
        if cursors[i] == len(calls[i]):
            live.remove(i)
    return stream


def test_stop_during_heavy_ingest_writes_everything_it_read(sessions):
    stream = many_events(30)
    fake = FakeAri(stream[0]["timestamp"])
    rec = MachineRecorder(1, fake, sessions)
    rec.start()
    assert fake.connected.wait(5)
    wait_until(rec.synced.is_set)
    for raw in stream:
        fake.emit(raw, deliver=True)
    time.sleep(0.05)  # part of the stream is read, part still in the socket
    rec.stop()
    read = rec.received
    assert read > 0
    truth = FakeAri()
    for raw in stream[:read]:
        truth.emit(raw, deliver=False)
    assert set(live_rows(sessions)) == set(truth.live)


WRITER = textwrap.dedent("""
    import json, sys, time
    from pbxcontrol.ari.events import parse_event
    from pbxcontrol.db.engine import make_engine, make_sessionmaker
    from pbxcontrol.recorder import store
    from pbxcontrol.recorder.live import LiveLegs
    from pbxcontrol.recorder.provisioned import ProvisionedCache
    stream = json.load(open(sys.argv[2]))
    engine = make_engine(sys.argv[1])
    sessions = make_sessionmaker(engine)
    rec = LiveLegs(1, ProvisionedCache(sessions).get)
    with sessions() as s:
        store.load(rec, s)
    print("ready", flush=True)
    for i in range(0, len(stream), 50):
        for seq, raw in enumerate(stream[i:i + 50], i):
            ev = parse_event(json.dumps(raw))
            if ev:
                rec.apply(ev, seq)
        with sessions.begin() as s:
            done = store.flush(rec, s)
        done()
""")


# A writer killed mid-transaction must leave a sound SQLite file. On PostgreSQL the writer is
# only a client: its crash safety is the server's business, not ours.
@sqlite_only("PRAGMA integrity_check of the SQLite file after kill -9")
def test_sqlite_file_survives_kill_9_at_any_moment(sessions, tmp_path):
    url = str(sessions.kw["bind"].url)
    rng = random.Random(11)
    for round_ in range(5):
        stream_file = tmp_path / f"stream{round_}.json"
        stream_file.write_text(json.dumps(many_events(10 + round_)))
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(stream_file)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            conn.execute(text("SELECT count(*) FROM legs")).scalar()
        engine.dispose()
    # And the recorder takes over what is there.
    fake = FakeAri()
    rec = MachineRecorder(1, fake, sessions)
    rec.start()
    try:
        wait_until(rec.synced.is_set)
        assert live_rows(sessions) == {}  # Asterisk has none of those channels
    finally:
        rec.stop()


def _failing_engine(url: str, pragma: str):
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _limit(dbapi_conn, _record):
        dbapi_conn.execute(pragma)
        dbapi_conn.commit()  # psycopg opened a transaction, whose rollback would undo a SET

    return engine


def _storage_fault(sessions, caplog, pragma: str, message: str) -> None:
    from tests.recorder.test_reconnect import split

    good = sessions.kw["bind"]
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = MachineRecorder(1, fake, sessions)
    rec.start()
    try:
        wait_until(rec.synced.is_set)
        bad = _failing_engine(password_url(good.url), pragma)
        sessions.configure(bind=bad)
        if good.dialect.name == "postgresql":
            # The writer keeps its connection (recorder/transactions.py): a server that turns
            # read-only (a demoted primary) drops its sessions first, as a restart does.
            with good.connect() as conn:
                conn.execute(text(TERMINATE))
        with caplog.at_level(logging.WARNING):
            for raw in before:
                fake.emit(raw)
            wait_until(lambda: message in caplog.text, what="a clear log line")
        assert live_rows(sessions) == {}
        # One line per try (SPEC §12), the first an error, then a warning a try.
        tries = [r for r in caplog.records if "database unreachable while" in r.getMessage()]
        assert tries and tries[0].levelno == logging.ERROR
        assert all(r.levelno == logging.WARNING for r in tries[1:])
        sessions.configure(bind=good)  # the operator frees space / fixes permissions
        bad.dispose()
        wait_until(converged(sessions, fake), what="recovery")
        assert len(live_rows(sessions)) == 2
        for raw in after:
            fake.emit(raw)
        wait_until(lambda: not live_rows(sessions))
    finally:
        sessions.configure(bind=good)
        rec.stop()


TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
#: A connection setting that refuses every write, and what the database then says.
READ_ONLY = {
    "sqlite": ("PRAGMA query_only = ON", "readonly database"),
    "postgresql": ("SET default_transaction_read_only = on", "read-only transaction"),
}


def test_read_only_database_is_logged_and_recovered_from(sessions, caplog):
    _storage_fault(sessions, caplog, *READ_ONLY[sessions.kw["bind"].dialect.name])


def test_full_disk_is_logged_and_recovered_from(tmp_path, caplog):
    """A real full filesystem (a small tmpfs, filled up), then space freed again."""
    import json as json_mod
    import os

    import pytest

    from pbxcontrol import provisioning
    from pbxcontrol.db import migrate
    from pbxcontrol.db.engine import make_sessionmaker
    from tests.conftest import TREE
    from tests.recorder.test_reconnect import split

    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.fail(f"this test mounts a tmpfs and needs root: {done.stderr.strip()}")
    rec = None
    try:
        engine = make_engine(f"sqlite:///{mnt / 'pbx.db'}")
        migrate.upgrade(engine)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            provisioning.apply(session, json_mod.loads(json_mod.dumps(TREE)))
        startup, before, after = split("trunk_to_phone_answered", "answered")
        fake = FakeAri(startup)
        rec = MachineRecorder(1, fake, sessions)
        rec.start()
        wait_until(rec.synced.is_set)
        with engine.connect() as conn:  # an empty WAL: the next write must grow it
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = mnt / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        with caplog.at_level(logging.WARNING):
            for raw in before:
                fake.emit(raw)
            wait_until(lambda: "database or disk is full" in caplog.text, what="a clear log line")
        assert live_rows(sessions) == {}
        os.remove(filler)  # the operator frees space
        wait_until(converged(sessions, fake), what="recovery")
        assert len(live_rows(sessions)) == 2
        for raw in after:
            fake.emit(raw)
        wait_until(lambda: not live_rows(sessions))
        tries = [r for r in caplog.records if "database unreachable while" in r.getMessage()]
        assert sum(r.levelno >= logging.ERROR for r in tries) == 1  # then a warning a try
    finally:
        if rec is not None:
            rec.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
