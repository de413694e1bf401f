"""Fixtures for the recorder tier: a provisioned database (SQLite and PostgreSQL) and replay
helpers."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from pbxcontrol import provisioning
from pbxcontrol.ari.events import parse_event
from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine, make_sessionmaker
from pbxcontrol.db.models import LEG_FIELDS, LEG_HISTORY_TABLE, LEGS_TABLE
from pbxcontrol.recorder import store
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.provisioned import ProvisionedCache
from tests.conftest import TREE
from tests.fakeari import FakeAri, load_recording


@pytest.fixture
def sessions(db_url):
    """A session factory on a new provisioned database, on each engine (tests/conftest.py)."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with factory.begin() as session:
        provisioning.apply(session, json.loads(json.dumps(TREE)))
    yield factory
    engine.dispose()


def live_rows(sessions, machine: int | None = None) -> dict[str, dict]:
    """uniqueid -> the API fields of each live leg (of one machine, or all)."""
    table = LEGS_TABLE
    query = select(*(table.c[f] for f in LEG_FIELDS))
    if machine is not None:
        query = query.where(table.c.machine == machine)
    with sessions() as session:
        return {r["uniqueid"]: dict(r) for r in session.execute(query).mappings()}


def history_ids(sessions) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(LEG_HISTORY_TABLE.c.uniqueid)))


class Replay:
    """Feeds a recording to a FakeAri and a LiveLegs, flushing after each event."""

    def __init__(self, sessions, name: str, machine: int = 1):
        self.sessions = sessions
        self.records = load_recording(name)
        info = self.records[0]
        assert info["type"] == "info"
        self.fake = FakeAri(info["data"]["status"]["startup_time"])
        self.recorder = LiveLegs(machine, ProvisionedCache(sessions).get)
        self.seq = 0

    def flush(self) -> None:
        with self.sessions.begin() as session:
            done = store.flush(self.recorder, session)
        done()

    def step(self, record) -> None:
        self.fake.emit(record["data"], deliver=False)
        event = parse_event(json.dumps(record["data"]))
        if event is not None:
            self.seq += 1
            self.recorder.apply(event, self.seq)
        self.flush()

    def events(self):
        """Yield (label or None) after each record, the database flushed."""
        for record in self.records[1:]:
            if record["type"] == "event":
                self.step(record)
                yield None
            elif record["type"] == "channels":
                yield record["label"]

    def run(self, until: str | None = None) -> None:
        for label in self.events():
            if until is not None and label == until:
                return
        if until is not None:
            raise AssertionError(f"no snapshot labelled {until!r}")
