"""The recorder publishes its status (heartbeat) and `pbxcontrol status` shows it."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from sqlalchemy import select, text, update

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning
from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine, make_sessionmaker
from pbxcontrol.db.models import Machine
from pbxcontrol.ops import status as status_mod
from pbxcontrol.recorder.machine import MachineRecorder
from tests.conftest import TREE, cli, write_config
from tests.fakeari import FakeAri
from tests.recorder.test_reconnect import converged, split, wait_until

MACHINE_1 = """\
    [recorder]
    heartbeat = 2
    [asterisk:1]
    ari_url = http://127.0.0.1:9/ari
    username = pbxcontrol
    password = secret
    """


@pytest.fixture
def site(tmp_path):
    """A config naming machine 1 and its provisioned SQLite database."""
    config = write_config(tmp_path, MACHINE_1)
    engine = make_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        provisioning.apply(session, json.loads(json.dumps(TREE)))
    yield config, sessions
    engine.dispose()


def status(config) -> dict:
    done = cli(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    (machine,) = json.loads(done.stdout)
    return machine


def row(sessions) -> Machine:
    """Machine 1's status row (an empty one before its first write)."""
    with sessions() as session:
        found = session.execute(select(Machine).where(Machine.id == 1)).scalar_one_or_none()
    return found or Machine(id=1, connected=False, events_total=0)


def test_a_recorder_publishes_its_status_and_status_shows_it(site):
    config, sessions = site
    startup, before, _after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = MachineRecorder(1, fake, sessions, heartbeat=0.2)
    rec.start()
    try:
        assert fake.connected.wait(5)
        for event in before:
            fake.emit(event)
        wait_until(converged(sessions, fake), what="legs recorded")
        wait_until(lambda: row(sessions).events_total == len(before), what="events counted")
        shown = status(config)
        assert shown["state"] == "recording" and shown["recording"] and shown["connected"]
        assert shown["holder"] == f"{socket.gethostname()}:{os.getpid()}"
        assert shown["live_legs"] == 2 == len(fake.live)
        assert shown["events_total"] == len(before)
        assert shown["heartbeat_age"] < 2 and shown["last_event_age"] < 10
        assert shown["last_sync_age"] < 10
        plain = cli(config, "status").stdout.splitlines()
        assert plain[0].split()[:3] == ["MACHINE", "STATE", "CONNECTED"]
        assert plain[1].split()[:4] == ["1", "recording", "yes", shown["holder"]]

        fake.reachable = False  # ARI goes away: shown at once, the recorder still beats
        fake.drop()
        wait_until(lambda: not row(sessions).connected, what="disconnect published")
        assert status(config)["state"] == "disconnected"
    finally:
        rec.stop()
    shown = status(config)  # a clean stop releases the machine
    assert (shown["state"], shown["holder"], shown["recording"]) == ("stopped", "", False)


def test_a_stale_heartbeat_shows_as_not_recording(site):
    """The holder died (kill -9, a hung writer, a lost database): its row still says
    connected, but nobody renews it. Stale after 3 heartbeats ([recorder] heartbeat = 2)."""
    config, sessions = site
    rec = MachineRecorder(1, FakeAri(), sessions, heartbeat=0.2)
    rec.start()
    wait_until(lambda: row(sessions).connected, what="first beat")
    rec.status.beat = lambda *args, **kwargs: None  # the holder hangs: no more beats
    rec.stop()
    beat = row(sessions).heartbeat_at
    loaded = config_mod.load(str(config))
    with sessions() as session:
        conn = session.connection()
        for after, state in ((5.9, "recording"), (6.1, "stale")):  # 3 x 2 s
            assert status_mod.machines(conn, loaded, beat + after)[0]["state"] == state
    with sessions.begin() as session:
        session.execute(update(Machine).values(heartbeat_at=time.time() - 60))
    shown = status(config)
    assert shown["state"] == "stale"
    assert not shown["recording"] and not shown["connected"]
    assert shown["holder"]  # who it was, to go and look
    line = cli(config, "status").stdout.splitlines()[1]
    assert re.search(r"\bstale \(heartbeat 1m0\ds ago\)  no ", line), line


def test_a_machine_never_recorded_and_one_not_configured(site):
    config, sessions = site
    assert status(config)["state"] == "never"
    with sessions.begin() as session:
        session.add(Machine(id=7, name="old", startup_time="", last_sync=0.0))
    done = cli(config, "status", "--json")
    shown = {m["machine"]: m for m in json.loads(done.stdout)}
    assert shown[1]["configured"] and not shown[7]["configured"]
    assert "7 (not configured)" in cli(config, "status").stdout


def test_migration_0006_keeps_the_machine_rows(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0005")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO machines (id, name, startup_time, last_sync) VALUES (1, 'm', 's', 9)")
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT * FROM machines")).mappings().one()
    engine.dispose()
    assert kept["name"] == "m" and kept["last_sync"] == 9
    assert (kept["holder"], kept["connected"], kept["heartbeat_at"]) == ("", 0, 0)
    assert (kept["events_total"], kept["events_per_second"], kept["last_event_at"]) == (0, 0, 0)


def test_ages_are_on_the_databases_clock_not_the_hosts(db_url, sessions, tmp_path, monkeypatch):
    """SPEC §12: the recorder's host runs an hour fast; `pbxcontrol status` on another
    (here: this host's real clock) still shows ages of seconds, as does /health: every time
    is written and compared on the database's clock."""
    from pbxcontrol.http import health

    config = write_config(tmp_path, MACHINE_1, db=db_url)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # the recorder's clock only
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = MachineRecorder(1, fake, sessions, heartbeat=0.2)
    rec.start()
    try:
        wait_until(rec.synced.is_set, what="recording")
        for event in before:
            fake.emit(event)
        wait_until(converged(sessions, fake), what="legs recorded")
        time.sleep(0.5)  # a few beats
        shown = status(config)  # another process: the real clock
        assert shown["state"] == "recording"
        for age in ("heartbeat_age", "last_sync_age", "last_event_age"):
            assert 0 <= shown[age] < 60, (age, shown)  # seconds, not an hour
        with sessions() as session:
            (entry,) = health.machines(session.connection(), [1], 5.0)
        assert 0 <= entry.last_event_age < 60 and 0 <= entry.renewed_age < 5
    finally:
        rec.stop()
