"""A machine nobody records (SPEC §12), on both engines, with real recorders on FakeAri: its
legs flagged `recorded = 0` once the lease is 2 x takeover_seconds old (the database's clock),
ended at the last renewal after forget_seconds, and live and recorded again once a recorder
comes back and reconciles — also the legs a forget had ended that Asterisk still has."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from pbxcontrol.db import journal, unrecorded
from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import LEG_HISTORY_TABLE, Machine
from tests.fakeari import FakeAri
from tests.recorder.conftest import live_rows
from tests.recorder.test_reconnect import converged, emit_all, split, wait_until

TAKEOVER = 1.0  # flagged 2 s after the last renewal
MACHINES = unrecorded.MACHINES


@pytest.fixture
def recording(sessions):
    """A recorder of machine 1 with two live legs (an answered call), and its FakeAri."""
    from pbxcontrol.recorder.machine import MachineRecorder

    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    made: list[MachineRecorder] = []

    def start(holder: str) -> MachineRecorder:
        rec = MachineRecorder(1, fake, sessions, takeover=TAKEOVER, holder=holder, heartbeat=0.2)
        rec.start()
        made.append(rec)
        wait_until(rec.synced.is_set, what=f"{holder} recording")
        return rec

    first = start("pbx-a:1")
    emit_all(fake, before)
    wait_until(converged(sessions, fake), what="legs recorded")
    yield fake, first, start
    for rec in made:
        rec.stop()


def recorded(sessions) -> dict[str, int]:
    return {uid: row["recorded"] for uid, row in live_rows(sessions, 1).items()}


def silence(sessions, seconds: float, holder: str = "gone:1") -> None:
    """The holder died `seconds` ago (by the database's clock): nobody renewed since."""
    with sessions.begin() as session:
        now = db_now(session.get_bind().dialect.name)
        session.execute(
            update(Machine).where(Machine.id == 1).values(renewed_at=now - seconds, holder=holder)
        )


def die(rec) -> None:
    """A recorder that stops without releasing its lease, as after kill -9."""
    rec.lease.release = lambda session: None
    rec.status.beat = lambda *args, **kwargs: None
    rec.stop()


def look(sessions, forget_seconds: float = 3600.0) -> bool:
    watch = unrecorded.Watch(TAKEOVER, forget_seconds)
    return watch.check(sessions.kw["bind"])[1]


def test_a_lease_silent_for_twice_the_takeover_flags_the_legs_once(sessions, recording):
    fake, rec, _ = recording
    assert set(recorded(sessions).values()) == {1}
    die(rec)
    silence(sessions, 2 * TAKEOVER - 0.5)
    assert not look(sessions)  # not yet: 1.5 s of silence
    assert set(recorded(sessions).values()) == {1}
    silence(sessions, 2 * TAKEOVER + 0.1)
    with sessions() as session:
        head = journal.position(session.connection()).head
    assert look(sessions)
    assert recorded(sessions) == dict.fromkeys(fake.live, 0)
    with sessions() as session:
        conn = session.connection()
        entries = journal.since(conn, head, journal.position(conn).head)
        (since,) = [s for m, s in unrecorded.unrecorded(conn) if m == 1]
        renewed = conn.execute(select(MACHINES.c.renewed_at).where(MACHINES.c.id == 1)).scalar()
    # One upsert per leg, its scope keys unchanged: the streams and views re-read them.
    assert sorted(e.uniqueid for e in entries) == sorted(fake.live)
    assert {e.op for e in entries} == {journal.UPSERT} and all(e.old == e.new for e in entries)
    assert since == renewed
    assert not look(sessions)  # flagged already: a second look writes nothing


def test_a_recorder_that_takes_over_reconciles_and_its_legs_are_recorded_again(sessions, recording):
    fake, rec, start = recording
    die(rec)
    silence(sessions, 2 * TAKEOVER + 1)
    assert look(sessions)
    assert set(recorded(sessions).values()) == {0}
    start("pbx-b:2")
    wait_until(lambda: set(recorded(sessions).values()) == {1}, what="recorded again")
    assert set(live_rows(sessions, 1)) == set(fake.live)
    with sessions() as session:
        assert unrecorded.unrecorded(session.connection()) == []


def test_a_holder_that_wakes_up_vouches_for_its_legs_at_its_next_heartbeat(sessions, recording):
    """Hung (SIGSTOP) for longer than 2 x takeover: flagged meanwhile. Awake, it renews its
    lease (nobody took it) and, reconciled, says its legs are recorded again."""
    fake, rec, _ = recording
    # The holder is awake: its renewal (every 0.2 s) may come between the silence and the
    # look, which then rightly flags nothing; silence it again until a look finds it silent.
    for _ in range(50):
        silence(sessions, 2 * TAKEOVER + 1, holder=rec.lease.holder)
        if look(sessions):
            break
    else:
        raise AssertionError("no look found the lease silent")
    wait_until(lambda: set(recorded(sessions).values()) == {1}, timeout=3, what="vouched for again")


def test_after_forget_seconds_the_legs_end_at_the_last_renewal_and_come_back_if_still_up(
    sessions, recording
):
    fake, rec, start = recording
    live = set(fake.live)
    die(rec)
    silence(sessions, 100)
    with sessions() as session:
        renewed = session.execute(select(MACHINES.c.renewed_at)).scalar()
        epoch = session.execute(select(MACHINES.c.epoch)).scalar()
    assert look(sessions, forget_seconds=50)
    assert live_rows(sessions, 1) == {}
    with sessions() as session:
        ended = session.execute(
            select(LEG_HISTORY_TABLE.c.uniqueid, LEG_HISTORY_TABLE.c.ended).where(
                LEG_HISTORY_TABLE.c.cause_txt == unrecorded.FORGOTTEN
            )
        ).all()
        lease = session.get(Machine, 1)
        assert lease is not None
        assert (lease.holder, lease.epoch, lease.recorded) == ("", epoch + 1, False)
    assert {uid for uid, _ in ended} == live
    assert [at for _, at in ended] == [pytest.approx(renewed)] * len(live)
    assert not look(sessions, forget_seconds=50)  # nothing left to end
    # Asterisk still has both channels: a recorder that comes back has them live again,
    # recorded, and the forget's guess at their end is gone from the history.
    start("pbx-c:3")
    wait_until(converged(sessions, fake), what="live again")
    wait_until(lambda: set(recorded(sessions).values()) == {1}, what="recorded again")
    with sessions() as session:
        guesses = session.execute(
            select(func.count()).where(LEG_HISTORY_TABLE.c.cause_txt == unrecorded.FORGOTTEN)
        ).scalar()
    assert guesses == 0


def test_a_forget_moves_the_epoch_on_so_a_holder_that_wakes_writes_nothing(sessions, recording):
    fake, rec, _ = recording
    epoch = rec.lease.epoch
    with sessions.begin() as session:
        # Silent for -60 s: any renewal counts, also one the live holder commits while this
        # statement waits for the write lock (a loaded machine: seconds), which 0.0 refused.
        assert unrecorded.forget(session.connection(), 1, -60.0) == 2
    # The holder's next fenced write finds another epoch: it stands by, takes the lease again
    # (a new epoch), reloads the legs (none) and reconciles (both channels back).
    wait_until(lambda: rec.lease.epoch == epoch + 2, timeout=10, what="the lease taken again")
    wait_until(converged(sessions, fake), timeout=10, what="reconciled")
    wait_until(lambda: set(recorded(sessions).values()) == {1}, what="recorded again")


def test_two_watches_at_once_flag_each_leg_once(sessions, recording, db_url):
    """Every HTTP process watches: the one whose UPDATE of the lease row wins writes."""
    import threading

    from pbxcontrol.db.engine import make_engine

    fake, rec, _ = recording
    die(rec)
    silence(sessions, 2 * TAKEOVER + 1)
    engines = [make_engine(db_url) for _ in range(4)]
    wrote: list[bool] = []
    gate = threading.Barrier(len(engines))

    def watch(engine) -> None:
        gate.wait()
        wrote.append(unrecorded.Watch(TAKEOVER, 3600).check(engine)[1])

    threads = [threading.Thread(target=watch, args=(e,)) for e in engines]
    with sessions() as session:
        head = journal.position(session.connection()).head
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for engine in engines:
        engine.dispose()
    assert sorted(wrote) == [False, False, False, True]
    with sessions() as session:
        conn = session.connection()
        entries = journal.since(conn, head, journal.position(conn).head)
    assert sorted(e.uniqueid for e in entries) == sorted(fake.live)
