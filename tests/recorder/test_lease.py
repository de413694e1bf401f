"""Standby recorders (SPEC §10): the lease, fenced writes, ApplicationReplaced, and a write
the database refuses — on SQLite and PostgreSQL, against FakeAri."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from sqlalchemy import Select, select, update

from pbxcontrol.ari.events import parse_event
from pbxcontrol.db.models import Machine
from pbxcontrol.recorder import store
from pbxcontrol.recorder.lease import Lease, LeaseLost
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.machine import MachineRecorder
from pbxcontrol.recorder.provisioned import ProvisionedCache
from tests.fakeari import FakeAri, FakeStream
from tests.recorder.conftest import live_rows
from tests.recorder.test_reconnect import converged, emit_all, split, wait_until

TAKEOVER = 2.0  # lease expiry 1.2 s, renewal every 0.4 s, standby polls every 0.2 s
REPLACED = json.dumps({"type": "ApplicationReplaced", "application": "pbxcontrol"})


class AsteriskAri(FakeAri):
    """FakeAri that, like Asterisk, sends ApplicationReplaced to the previous websocket of
    the application when a new one opens, and counts the websockets opened."""

    def __init__(self, startup: str):
        super().__init__(startup)
        self.opened = 0

    def open_events(self) -> FakeStream:
        previous = self.stream
        stream = super().open_events()
        self.opened += 1
        if previous is not None and not previous.closed:
            previous.deliver(REPLACED)
        return stream


def lease_row(sessions, machine: int = 1) -> Machine:
    with sessions() as session:
        row = session.get(Machine, machine)
        assert row is not None
        return row


def take(sessions, lease: Lease) -> bool:
    with sessions.begin() as session:
        lease.ensure_row(session, "machine 1")
    with sessions.begin() as session:
        return lease.try_acquire(session)


def expire(sessions, machine: int = 1) -> None:
    """The holder stopped renewing long ago (by the database's clock)."""
    with sessions.begin() as session:
        session.execute(
            update(Machine).where(Machine.id == machine).values(renewed_at=Machine.renewed_at - 60)
        )


@pytest.fixture
def recorders():
    started: list[MachineRecorder] = []

    def start(fake, sessions, holder: str, **kwargs) -> MachineRecorder:
        rec = MachineRecorder(1, fake, sessions, takeover=TAKEOVER, holder=holder, **kwargs)
        rec.start()
        started.append(rec)
        return rec

    yield start
    for rec in started:
        rec.stop()


def test_one_of_two_contenders_holds_and_a_takeover_bumps_the_epoch(sessions):
    a, b = Lease(1, "a:1", TAKEOVER), Lease(1, "b:2", TAKEOVER)
    assert take(sessions, a) and a.epoch == 1 and a.valid()
    assert not take(sessions, b) and b.epoch is None
    assert b.seen is not None and (b.seen.holder, b.seen.epoch) == ("a:1", 1)
    with sessions.begin() as session:
        a.fence(session)  # renewed: still a's
    assert not take(sessions, b)
    expire(sessions)
    assert take(sessions, b) and b.epoch == 2
    row = lease_row(sessions)
    assert (row.holder, row.epoch) == ("b:2", 2)
    lost = r"lost the lease \(epoch 1\) to b:2 \(epoch 2\)"
    with pytest.raises(LeaseLost, match=lost), sessions.begin() as session:
        a.fence(session)
    assert a.epoch is None and not a.valid()


def test_a_released_lease_is_taken_at_once(sessions):
    a, b = Lease(1, "a:1", 600), Lease(1, "b:2", 600)
    assert take(sessions, a)
    with sessions.begin() as session:
        a.fence(session)
        a.release(session)
    assert take(sessions, b) and b.epoch == 2


@pytest.mark.parametrize("rounds", [5])
def test_standbys_racing_for_an_expired_lease_never_both_win(sessions, rounds):
    """Compare-and-set on the epoch: whatever the interleaving, one winner per expiry."""
    take(sessions, Lease(1, "dead:0", TAKEOVER))
    for _ in range(rounds):
        expire(sessions)
        contenders = [Lease(1, f"standby:{i}", TAKEOVER) for i in range(6)]
        barrier, won = threading.Barrier(len(contenders)), []

        def race(lease: Lease, barrier: threading.Barrier, won: list[Lease]) -> None:
            barrier.wait()
            with sessions.begin() as session:
                if lease.try_acquire(session):
                    won.append(lease)

        threads = [
            threading.Thread(target=race, args=(lease, barrier, won)) for lease in contenders
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(won) == 1, [lease.holder for lease in won]
        assert lease_row(sessions).holder == won[0].holder


class PausedAfterRead:
    """A session that stops after its first SELECT until `go` is set: the standby read the
    lease, and a rival takes it before this standby's UPDATE runs."""

    def __init__(self, session, read: threading.Event, go: threading.Event):
        self.session, self.read, self.go, self.paused = session, read, go, False

    def get_bind(self):
        return self.session.get_bind()

    def execute(self, statement, *args, **kwargs):
        result = self.session.execute(statement, *args, **kwargs)
        if not self.paused and isinstance(statement, Select):
            self.paused = True
            self.read.set()
            self.go.wait(10)
        return result


def test_a_standby_that_read_the_lease_before_a_rival_took_it_does_not_win(sessions):
    take(sessions, Lease(1, "dead:0", TAKEOVER))
    expire(sessions)
    slow, fast = Lease(1, "slow:1", TAKEOVER), Lease(1, "fast:2", TAKEOVER)
    read, go, won = threading.Event(), threading.Event(), []

    def slow_standby() -> None:
        with sessions.begin() as session:
            won.append(slow.try_acquire(PausedAfterRead(session, read, go)))

    thread = threading.Thread(target=slow_standby)
    thread.start()
    assert read.wait(10)
    assert take(sessions, fast) and fast.epoch == 2
    go.set()
    thread.join(30)
    assert won == [False] and slow.epoch is None
    assert (lease_row(sessions).holder, lease_row(sessions).epoch) == ("fast:2", 2)


def test_a_standby_does_not_connect_to_ari_before_it_holds_the_lease(sessions, recorders):
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = AsteriskAri(startup)
    first = recorders(fake, sessions, "first:1")
    wait_until(first.synced.is_set, what="the first recorder recording")
    second = recorders(fake, sessions, "second:2")
    emit_all(fake, before)
    wait_until(converged(sessions, fake), what="legs")
    assert not second.stopping.wait(3 * TAKEOVER)  # several expiries: the lease is renewed
    assert fake.opened == 1 and not second.holding.is_set()
    assert lease_row(sessions).holder == "first:1"
    first.stop()  # a clean stop releases the lease: the standby records at once
    wait_until(second.synced.is_set, timeout=TAKEOVER, what="the standby recording")
    assert fake.opened == 2 and lease_row(sessions).holder == "second:2"
    assert set(live_rows(sessions)) == set(fake.live)


def test_a_hung_holder_is_replaced_and_when_it_wakes_writes_nothing(sessions, recorders, caplog):
    """A holder whose writer hangs (as under SIGSTOP): its reader closes the websocket once
    its lease may be gone, a standby takes over and reconciles; when the old writer wakes,
    its batch is fenced off, and it stands by."""
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = AsteriskAri(startup)
    old = recorders(fake, sessions, "old:1")
    wait_until(old.synced.is_set, what="recording")
    hang, real_run = threading.Event(), old.tx.run

    def hung_run(work, what, fenced=True):
        hang.wait()
        return real_run(work, what, fenced)

    old.tx.run = hung_run  # type: ignore[method-assign]
    old_stream = fake.stream
    emit_all(fake, before)  # read by the old holder, never written by it
    new = recorders(fake, sessions, "new:2")
    wait_until(new.synced.is_set, timeout=3 * TAKEOVER, what="the takeover")
    # The old reader closes once its lease is in doubt past takeover_seconds (recorder/
    # reader.py): around the takeover, not necessarily before the new holder's first sync.
    assert old_stream is not None
    wait_until(lambda: old_stream.closed, timeout=2 * TAKEOVER, what="the old websocket closed")
    wait_until(converged(sessions, fake), what="the new holder's legs")
    written = live_rows(sessions)
    with caplog.at_level(logging.WARNING):
        hang.set()  # the old holder wakes up
        emit_all(fake, after)
        wait_until(lambda: not live_rows(sessions), what="the new holder ends the call")
        wait_until(lambda: not old.holding.is_set(), what="the old holder standing by")
    assert "old:1" not in {lease_row(sessions).holder} and lease_row(sessions).epoch == 2
    assert "lost the lease (epoch 1) to new:2 (epoch 2)" in caplog.text
    assert "standing by: events websocket closed" in caplog.text
    assert fake.opened == 2 and not fake.stream.closed  # the new holder's, untouched
    assert written  # (what the new holder recorded before the hangup)


def test_application_replaced_closes_the_websocket_and_stands_by(sessions, recorders, caplog):
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = AsteriskAri(startup)
    rec = recorders(fake, sessions, "mine:1")
    wait_until(rec.synced.is_set, what="recording")
    stream = fake.stream
    thief = Lease(1, "thief:9", TAKEOVER)
    expire(sessions)
    assert take(sessions, thief)  # another process took the lease, and connected
    with caplog.at_level(logging.WARNING):
        fake.send_raw(REPLACED)
        wait_until(lambda: stream.closed, timeout=2, what="the replaced websocket closed")
        wait_until(lambda: not rec.holding.is_set(), what="standing by")
        emit_all(fake, before)
        assert not rec.stopping.wait(1.0)
    assert "another client took over our ARI application name" in caplog.text
    assert fake.opened == 1 and live_rows(sessions) == {}  # nothing written after it


def test_application_replaced_while_holding_the_lease_reconnects_slowly(
    sessions, recorders, caplog
):
    """A client outside the lease took our application name: the holder checks its lease,
    still holds it, and reconnects after a pause (not at once: that would flap)."""
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = AsteriskAri(startup)
    rec = recorders(fake, sessions, "mine:1")
    wait_until(rec.synced.is_set, what="recording")
    fake.send_raw(REPLACED)
    wait_until(lambda: fake.opened == 2, timeout=4, what="a reconnect")
    emit_all(fake, before)
    wait_until(converged(sessions, fake), what="recording again")
    assert lease_row(sessions).epoch == 1  # the same lease throughout


def test_a_refused_write_is_surfaced_once_and_the_machine_resynced(sessions, recorders, caplog):
    """Another writer (outside the lease) inserted the same legs first: the insert violates
    uq_legs_machine_uniqueid. Logged once as an error, the legs reloaded from the database
    and reconciled — not the same batch retried as if the database were down."""
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = AsteriskAri(startup)
    rec = recorders(fake, sessions, "mine:1")
    wait_until(rec.synced.is_set, what="recording")
    intruder = LiveLegs(1, ProvisionedCache(sessions).get)
    for seq, raw in enumerate(before, 1):
        event = parse_event(json.dumps(raw))
        if event is not None:
            intruder.apply(event, seq)
    with sessions.begin() as session:
        store.flush(intruder, session)
    with caplog.at_level(logging.WARNING):
        emit_all(fake, before)
        wait_until(lambda: "reloaded" in caplog.text, what="the resync")
        wait_until(converged(sessions, fake), what="legs after the resync")
        emit_all(fake, after)
        wait_until(lambda: not live_rows(sessions), what="the hangup recorded")
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert "a bug, not an outage" in refused[0].getMessage()
    assert "uq_legs_machine_uniqueid" in refused[0].getMessage() or (
        "UNIQUE constraint failed: legs.machine, legs.uniqueid" in refused[0].getMessage()
    )
    assert not [r for r in caplog.records if "database error" in r.getMessage()]
    with sessions() as session:
        assert session.scalar(select(Machine.epoch).where(Machine.id == 1)) == 1
