"""What a write costs the recorder's writer in statements (issue 21: in a busy hour, one or two
events per transaction, the transactions were a recorder's busiest work). An event that
changes no row writes nothing while the lease is trusted; on PostgreSQL the writer keeps its
connection (no ping at a pool checkout) and the lease's fence rides in the journal's statement,
the first of each transaction that journals."""

from __future__ import annotations

import copy
import threading
import time

from sqlalchemy import event

from pbxcontrol.db import engine as engine_module
from tests.conftest import postgresql_only
from tests.fakeari import FakeAri
from tests.recorder.test_reconnect import converged, emit_all, split, started, wait_until

__all__ = ["started"]  # the fixture, used by name


def _writer() -> bool:
    return threading.current_thread().name.endswith(" writer")


class WriterTrips:
    """The statements the writer thread runs (heartbeats aside), and its pool pings."""

    def __init__(self, sessions, monkeypatch) -> None:
        self.engine = sessions.kw["bind"]
        self.statements: list[str] = []
        self.pings = 0
        real_ping = engine_module.ping

        def ping(dbapi_connection) -> None:
            self.pings += _writer()
            real_ping(dbapi_connection)

        monkeypatch.setattr(engine_module, "ping", ping)
        event.listen(self.engine, "before_cursor_execute", self._statement)

    def _statement(self, _conn, _cursor, statement, *_args) -> None:
        heartbeat = statement.startswith("UPDATE machines SET") and "epoch" not in statement
        if _writer() and not heartbeat:  # (SQLite's fence is an UPDATE of the epoch's row)
            self.statements.append(statement)

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)


def test_an_event_that_changes_no_row_writes_nothing(sessions, started, monkeypatch):
    startup, before, _after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = started(fake)
    emit_all(fake, before)
    wait_until(converged(sessions, fake), what="legs while answered")
    live = next(e["channel"] for e in before if e["type"] == "ChannelCreated")
    wait_until(lambda: rec.status.applied == rec.received, what="everything applied")
    trips = WriterTrips(sessions, monkeypatch)
    try:
        applied = rec.status.applied
        for n in range(5):  # a variable nothing reads, on a live channel
            fake.emit(
                {
                    "type": "ChannelVarset",
                    "variable": f"UNREAD_{n}",
                    "value": "1",
                    "channel": copy.deepcopy(live),
                    "timestamp": before[-1]["timestamp"],
                    "application": before[-1].get("application", "pbxcontrol"),
                }
            )
        wait_until(lambda: rec.status.applied >= applied + 5, what="the events applied")
        time.sleep(0.3)  # a write would follow at once
        assert rec.lease.valid()
        assert trips.statements == [] and trips.pings == 0
    finally:
        trips.remove()


@postgresql_only("the kept connection and the fence in the journal's statement are PostgreSQL's")
def test_postgresql_writes_ride_one_connection_with_the_fence_in_the_first_statement(
    sessions, started, monkeypatch
):
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    started(fake)
    trips = WriterTrips(sessions, monkeypatch)
    try:
        emit_all(fake, before)
        wait_until(converged(sessions, fake), what="legs while answered")
        emit_all(fake, after)
        wait_until(converged(sessions, fake), what="legs gone")
        journal = [s for s in trips.statements if "pbx_journal_append" in s]
        assert journal, trips.statements
        assert all("FOR KEY SHARE" in s for s in journal), "a journal statement without fence"
        fences = [s for s in trips.statements if "FOR KEY SHARE" in s]
        assert fences == journal, "a fence of its own before the journal's statement"
        assert trips.pings == 0, "the writer checked a pooled connection out"
    finally:
        trips.remove()
