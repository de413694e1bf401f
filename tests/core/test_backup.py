"""Backup and restore while the recorder writes (SPEC §12 Backup): `pbxcontrol backup FILE` on
SQLite (online, consistent, 0600); on PostgreSQL it refuses (exit 2) with the pg_dump recipe,
and that recipe, run as printed, restores too."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, make_url, select

from pbxcontrol.db.engine import make_engine, make_sessionmaker
from pbxcontrol.db.models import LEGS_TABLE
from pbxcontrol.ops.backup import libpq
from pbxcontrol.recorder.machine import MachineRecorder
from tests.conftest import cli, provision_tree, write_config
from tests.databases import password_url
from tests.fakeari import FakeAri, load_recording


def call_events() -> tuple[str, list[dict]]:
    """A call from the trunk to alice up to its answer (both legs stay up), as recorded."""
    records = load_recording("trunk_to_phone_answered")
    events = []
    for record in records[1:]:
        if record["type"] == "channels" and record["label"] == "answered":
            break
        if record["type"] == "event":
            events.append(record["data"])
    return records[0]["data"]["status"]["startup_time"], events


class CallsComing:
    """A real recorder (MachineRecorder) recording calls that start one after another on a
    FakeAri, until stopped; `created` is every channel id in the order Asterisk made them."""

    def __init__(self, url: str) -> None:
        startup, self.events = call_events()
        self.fake = FakeAri(startup)
        self.engine = make_engine(url)
        self.recorder = MachineRecorder(1, self.fake, make_sessionmaker(self.engine))
        self.created: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CallsComing:
        self.recorder.start()
        assert self.fake.connected.wait(5)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.recorder.stop()
        self.engine.dispose()

    def _run(self) -> None:
        copy = 0
        while not self.stopping.is_set():
            copy += 1
            text = json.dumps(self.events)
            for old in sorted({e["channel"]["id"] for e in self.events if "channel" in e}):
                text = text.replace(f'"{old}"', f'"{old}-{copy}"')
            for event in json.loads(text):
                channel = event.get("channel", {}).get("id")
                if event["type"] == "ChannelCreated":
                    self.created.append(channel)
                self.fake.emit(event)
                time.sleep(0.002)

    def legs(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(LEGS_TABLE)) or 0


@contextlib.contextmanager
def reading(url: str) -> Iterator[None]:
    """SQLite: a reader's transaction open meanwhile (an API request, a slow report): the
    checkpoints cannot move the WAL's newest pages into the database file past it, so a copy
    of the file alone would miss the latest commits."""
    if not url.startswith("sqlite:///"):
        yield
        return
    db = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
    try:
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM legs").fetchone()
        yield
    finally:
        db.close()


def restored_legs(config: Path) -> set[str]:
    """What `pbxcontrol calls` and `status` read from a restored database."""
    status = cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert [m["machine"] for m in json.loads(status.stdout)] == [1]
    calls = cli(config, "calls", "--json")
    assert calls.returncode == 0, calls.stderr
    return {leg["uniqueid"] for leg in json.loads(calls.stdout)}


def test_a_backup_taken_while_the_recorder_writes_restores_one_consistent_state(
    tmp_path, db_url, database, databases
):
    config = write_config(tmp_path, db=db_url)
    provision_tree(config)
    target = tmp_path / "copy" / "pbx-backup.db"
    target.parent.mkdir()
    with CallsComing(db_url) as calls, reading(db_url):
        while calls.legs() < 20:
            time.sleep(0.05)
        before = calls.legs()
        done = cli(config, "backup", str(target))
        time.sleep(0.3)
        after = calls.legs()
    # Every channel made, counted once the recorder has stopped: PostgreSQL's dump runs after
    # it and holds the legs of channels made after `after` was read.
    created = list(calls.created)
    assert before < after, "the recorder did not write during the backup"
    restored = tmp_path / "restored"
    restored.mkdir()
    if database == "sqlite":
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"backed up {db_url[len('sqlite:///') :]} to {target}")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert sorted(os.listdir(target.parent)) == ["pbx-backup.db"]  # nothing left behind
        (restored / "pbx.db").write_bytes(target.read_bytes())  # the restore: a copy
        with sqlite3.connect(restored / "pbx.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        legs = restored_legs(write_config(restored))
    else:
        assert done.returncode == 2, done.stderr
        with databases.fresh("postgresql", restored, empty=True) as empty:
            restore_with_the_printed_recipe(done.stderr, password_url(db_url), empty, target)
            legs = restored_legs(write_config(restored, db=empty))
    # One commit's state: the legs of the first N channels created, none missing in between,
    # and every commit made before the backup started.
    assert before <= len(legs) <= len(created)
    assert legs == set(created[: len(legs)])


def restore_with_the_printed_recipe(message: str, url: str, empty: str, target: Path) -> None:
    """Run the pg_dump and pg_restore lines of `pbxcontrol backup`'s refusal, as printed
    (pointed at the test's databases, the password in PGPASSWORD as it says)."""
    dump, restore = (
        shlex.split(line)
        for line in message.splitlines()
        if line.strip().startswith(("pg_dump ", "pg_restore "))
    )
    source, dest = libpq(url)[1], libpq(password_url(empty))[1]
    assert dump == ["pg_dump", "--format=custom", f"--file={target}", source]
    assert restore == ["pg_restore", "--no-owner", f"--dbname={source}", str(target)]
    env = {**os.environ, "PGPASSWORD": make_url(url).password or ""}
    for argv in (dump, [*restore[:2], f"--dbname={dest}", *restore[3:]]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


def test_backup_refuses_postgresql_with_the_recipe_and_no_password(tmp_path):
    url = "postgresql+psycopg://pbx:s3cret@db1:5432,db2:5432/pbx?target_session_attrs=read-write"
    config = write_config(tmp_path, db=url)
    done = cli(config, "backup", "pbx.dump")
    assert done.returncode == 2
    assert done.stderr.startswith("pbxcontrol: error: backup copies SQLite databases")
    plain = "postgresql://pbx@db1:5432,db2:5432/pbx?target_session_attrs=read-write"
    assert f"pg_dump --format=custom --file=pbx.dump '{plain}'" in done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///{tmp}/none.db", "no SQLite database at '{tmp}/none.db' to back up"),
        ("sqlite://", "no SQLite database at '(in memory)' to back up"),
    ],
)
def test_backup_says_when_there_is_no_database_file(tmp_path, url, message):
    config = write_config(tmp_path, db=url.format(tmp=tmp_path))
    done = cli(config, "backup", str(tmp_path / "out.db"))
    assert (done.returncode, done.stderr.strip()) == (
        2,
        f"pbxcontrol: error: {message.format(tmp=tmp_path)}",
    )
    assert not (tmp_path / "none.db").exists()  # looking did not create it
