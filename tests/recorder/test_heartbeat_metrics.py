"""The holder writes its counters for GET /metrics with its heartbeat (migration 0012):
reconnects, reconciles and the legs they corrected, and the read-to-commit lag."""

from __future__ import annotations

from sqlalchemy import select

from pbxcontrol.db.models import Machine
from pbxcontrol.recorder.machine import MachineRecorder
from tests.fakeari import FakeAri
from tests.recorder.test_reconnect import converged, split, wait_until


def row(sessions) -> Machine:
    with sessions() as session:
        found = session.execute(select(Machine).where(Machine.id == 1)).scalar_one_or_none()
    return found or Machine(id=1, reconnects=0, reconciles=0, corrections=0, lag_seconds=0.0)


def test_the_heartbeat_counts_reconnects_reconciles_corrections_and_lag(sessions):
    startup, before, _after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = MachineRecorder(1, fake, sessions, heartbeat=0.2, takeover=2.0)
    rec.start()
    try:
        assert fake.connected.wait(5)
        for event in before:
            fake.emit(event)
        wait_until(converged(sessions, fake), what="legs recorded")
        wait_until(lambda: row(sessions).lag_seconds > 0, what="a lag measured")
        assert row(sessions).lag_seconds < 5
        first = row(sessions)
        assert first.reconnects == 0 and first.reconciles >= 1
        # The legs end in Asterisk unheard and the websocket drops: the reconcile after the
        # reconnect corrects them (ends them), and counts them. (Cleared first: a reconnect
        # quick enough to reconcile before a clear after the drop found them still up.)
        with fake._lock:  # as FakeAri.restart: not while a reconcile reads them
            gone = len(fake.live)
            fake.live.clear()
        fake.drop()
        wait_until(lambda: row(sessions).reconnects == 1, what="a reconnect counted")
        wait_until(
            lambda: row(sessions).corrections >= first.corrections + gone,
            what="corrections counted",
        )
        assert row(sessions).reconciles > first.reconciles
    finally:
        rec.stop()
