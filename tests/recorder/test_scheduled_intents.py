"""Scheduled intents (calls/make's `delay`, SPEC §11.4 and §11.2): answered at once, run by the
holder of the lease when due — never before, on time, once — and by a standby that took the
lease meanwhile (a scheduled intent nobody claimed is not "claimed but unfinished"); one due
long ago with nobody there to run it expires. On one database of each engine, with the fake
ARI of test_intents."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from pbxcontrol.db import intents
from pbxcontrol.db.intents import INTENTS, Control, Doorbell, Intent
from pbxcontrol.recorder.lease import MACHINES, LeaseLost
from tests.recorder.test_intents import (
    CountingAri,
    request,
    run_in_background,
    states,
    stop,
    take,
    worker,
)


def schedule(sessions, delay: float, uid: str = "1.1") -> int:
    """A scheduled intent as the API writes it; its id."""
    with sessions.begin() as session:
        _, [intent_id] = intents._write(
            session.connection(), request(), [Intent(1, "hangup", (uid,), delay=delay)], 2.0
        )
    return intent_id


def test_the_api_answers_a_scheduled_intent_at_once(sessions):
    take(sessions)  # a holder on record, its worker not running
    control = Control(sessions.kw["bind"], Doorbell())
    started = time.monotonic()
    _, [outcome] = control.carry_out(request(), [Intent(1, "hangup", ("1.1",), delay=30)], started)
    # Well short of the 2 s wait (1.04 s was seen once with four test workers on two cores).
    assert time.monotonic() - started < 1.5  # not the 2 s wait
    assert (outcome.state, outcome.code) == ("scheduled", 0)


def test_a_scheduled_intent_runs_when_due_not_before(sessions):
    lease = take(sessions)
    schedule(sessions, 0.6)
    ari = CountingAri({"1.1"})
    w = worker(sessions, lease, ari)
    assert w.round(lease.epoch) == 0 and ari.asked == []
    assert states(sessions) == [("scheduled", 0)]
    time.sleep(0.7)
    assert w.round(lease.epoch) == 1 and ari.asked == ["1.1"]
    assert states(sessions) == [("done", lease.epoch)]
    assert w.round(lease.epoch) == 0 and ari.asked == ["1.1"]  # once


@pytest.mark.parametrize("delay", [0.4, 1.3])  # 1.3: beyond PostgreSQL's 1 s poll
def test_the_worker_wakes_for_a_scheduled_intent_on_time(sessions, delay):
    lease = take(sessions)
    ari = CountingAri({"1.1"})
    w = worker(sessions, lease, ari)
    thread = run_in_background(w)
    try:
        time.sleep(0.2)  # the worker is asleep in its poll
        started = time.monotonic()
        schedule(sessions, delay)
        w.wake.set()  # the API's doorbell
        while not ari.asked:
            assert time.monotonic() - started < delay + 2, states(sessions)
            time.sleep(0.005)
        took = time.monotonic() - started
    finally:
        stop(w, thread)
    assert delay <= took + 0.02 and took < delay + 0.25, took  # not a poll late


def test_a_standby_that_takes_the_lease_runs_a_scheduled_intent_once(sessions):
    old = take(sessions, holder="old")
    stale = old.epoch
    schedule(sessions, 0.5)
    ari_old, ari_new = CountingAri({"1.1"}), CountingAri({"1.1"})
    assert worker(sessions, old, ari_old).round(stale) == 0  # not due yet
    with sessions.begin() as session:  # the old holder dies; its lease expires
        session.execute(update(MACHINES).values(renewed_at=MACHINES.c.renewed_at - 60))
    new = take(sessions, holder="new")
    w = worker(sessions, new, ari_new)
    assert w.round(new.epoch) == 0  # the takeover's orphan sweep leaves it scheduled
    assert states(sessions) == [("scheduled", 0)]
    time.sleep(0.6)
    with pytest.raises(LeaseLost):  # the old holder, awake again, is fenced out
        worker(sessions, old, ari_old).round(stale)
    assert w.round(new.epoch) == 1
    assert ari_old.asked == [] and ari_new.asked == ["1.1"]
    assert states(sessions) == [("done", new.epoch)]


def test_a_scheduled_intent_due_long_ago_expires_instead_of_running(sessions):
    lease = take(sessions)
    schedule(sessions, 0.1)
    with sessions.begin() as session:  # nobody held the lease when it was due
        late = intents.SCHEDULE_GRACE + 10
        session.execute(update(INTENTS).values(deadline=INTENTS.c.deadline - late))
    ari = CountingAri({"1.1"})
    worker(sessions, lease, ari).round(lease.epoch)
    assert ari.asked == [] and states(sessions) == [("expired", lease.epoch)]
