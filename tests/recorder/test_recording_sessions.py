"""Recording sessions as rows (SPEC §11.2 item 5, §11.5): two recording processes on one
database of each engine, the holder "killed" (its lease expires, it runs no more) in the middle
of a recording, the standby taking over: the recording continues and stops once, one row,
nothing started twice; a holder killed between the snoop and the record leaves nothing behind."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, update

from pbxcontrol.db import intents
from pbxcontrol.db.controls import CONTROLS, LEGS
from pbxcontrol.db.intents import INTENTS, Intent, Request
from pbxcontrol.recorder import recording
from pbxcontrol.recorder.intents import IntentWorker
from pbxcontrol.recorder.lease import MACHINES
from pbxcontrol.recorder.leg import Recorded
from tests.recorder.record_ari import RecordAri
from tests.recorder.test_intents import take, worker

PARAMS = {"customer": "3", "format": "wav", "directory": "/rec"}


def live(sessions, *uids: str) -> None:
    """The legs the recorder lists (the holder's sweep ends the sessions of the others)."""
    with sessions.begin() as session:
        for uid in uids:
            session.execute(LEGS.insert().values(machine=1, uniqueid=uid, callid=uid))


def ask(sessions, function: str, uniqueid: str = "1.1") -> None:
    request = Request(time.time(), "acme", 3, "192.0.2.1", function, uniqueid=uniqueid)
    with sessions.begin() as session:
        intent = Intent(1, function, (uniqueid,), PARAMS)
        intents._write(session.connection(), request, [intent], 2.0)


def kill(sessions) -> None:
    """The holder stops for good (kill -9): its lease runs out."""
    with sessions.begin() as session:
        session.execute(update(MACHINES).values(renewed_at=MACHINES.c.renewed_at - 60))


def rows(sessions) -> list[tuple[str, str, int]]:
    with sessions() as session:
        c = CONTROLS.c
        return [tuple(r) for r in session.execute(select(c.uniqueid, c.state, c.epoch))]


def outcomes(sessions) -> list[tuple[str, str, int]]:
    with sessions() as session:
        c = INTENTS.c
        query = select(c.function, c.state, c.code).order_by(c.id)
        return [tuple(r) for r in session.execute(query)]


def test_a_takeover_in_the_middle_of_a_recording_keeps_it_and_stops_it_once(sessions):
    ari = RecordAri({"1.1"})
    live(sessions, "1.1")
    old = take(sessions, holder="old")
    ask(sessions, "record_start")
    assert worker(sessions, old, ari).round(old.epoch) == 1
    [name] = ari.recordings
    kill(sessions)
    new = take(sessions, holder="new")
    standby = worker(sessions, new, ari)
    ask(sessions, "record_start")  # a second start after the takeover: still one recording
    assert standby.round(new.epoch) == 1
    assert list(ari.recordings) == [name] and ari.created == 1
    assert rows(sessions) == [("1.1", "recording", new.epoch)]  # reconciled by the new holder
    ask(sessions, "record_pause")
    ask(sessions, "record_stop")
    assert standby.round(new.epoch) == 2
    assert ari.recordings == {} and ari.snoops == {}
    assert rows(sessions) == [("1.1", "ended", new.epoch)]
    assert outcomes(sessions) == [
        ("record_start", "done", 204),
        ("record_start", "refused", 409),
        ("record_pause", "done", 204),
        ("record_stop", "done", 204),
    ]


def test_a_paused_recording_stays_paused_across_a_takeover(sessions):
    ari = RecordAri({"1.1"})
    live(sessions, "1.1")
    old = take(sessions, holder="old")
    ask(sessions, "record_start")
    ask(sessions, "record_pause")
    assert worker(sessions, old, ari).round(old.epoch) == 2
    kill(sessions)
    new = take(sessions, holder="new")
    ask(sessions, "record_start")  # unpauses the old holder's recording, starts none
    assert worker(sessions, new, ari).round(new.epoch) == 1
    assert [r["state"] for r in ari.recordings.values()] == ["recording"] and ari.created == 1
    assert rows(sessions) == [("1.1", "recording", new.epoch)]


def test_the_new_holder_tells_the_list_what_it_kept_and_what_it_ended(sessions):
    """A holder killed after its ARI call and before its writer wrote leaves the list behind:
    the new holder's reconcile says again what each session is (recorder/leg.py Recorded)."""
    ari = RecordAri({"1.1", "1.2"})
    live(sessions, "1.1", "1.2")
    old = take(sessions, holder="old")
    ask(sessions, "record_start", "1.1")
    ask(sessions, "record_start", "1.2")
    ask(sessions, "record_pause", "1.2")
    assert worker(sessions, old, ari).round(old.epoch) == 3
    paths = {uid: path for uid, _, path in _paths(sessions)}
    kill(sessions)
    ari.end("1.1")  # its leg ended meanwhile, its recording with it
    new = take(sessions, holder="new")
    told: list[Recorded] = []
    standby = IntentWorker(
        1, ari, sessions, new, _held(), threading.Event(), threading.Event(), note=told.append
    )
    assert standby.round(new.epoch) == 0
    assert sorted(told, key=lambda r: r.uniqueid) == [
        Recorded("1.1", paths["1.1"], False),
        Recorded("1.2", paths["1.2"], True, paused=1),
    ]


def _held() -> threading.Event:
    held = threading.Event()
    held.set()
    return held


def _paths(sessions) -> list[tuple[str, str, str]]:
    with sessions() as session:
        c = CONTROLS.c
        return [tuple(r) for r in session.execute(select(c.uniqueid, c.state, c.path))]


def test_a_holder_killed_between_the_snoop_and_the_record_leaves_nothing_behind(sessions):
    ari = RecordAri({"1.1"})
    live(sessions, "1.1")
    old = take(sessions, holder="old")
    ask(sessions, "record_start")
    with sessions.begin() as session:  # claimed; the row and the snoop made; then killed
        old.fence(session)
        [claimed] = intents.claim(session, 1, old.epoch)
    made = recording.Rows(sessions, 1, old.epoch)
    made.open("1.1", f"pbxc-{claimed.id}-record", "3/x/1.1-1", "/rec/3/x/1.1-1.wav", claimed.id)
    ari.call("POST", "/channels/1.1/snoop", spy="both", app="pbxcontrol", snoopId="pbxc-1-record")
    kill(sessions)
    new = take(sessions, holder="new")
    standby = worker(sessions, new, ari)
    assert standby.round(new.epoch) == 0
    assert ari.snoops == {}  # the orphaned snoop hung up
    assert rows(sessions) == [("1.1", "ended", new.epoch)]
    assert outcomes(sessions) == [("record_start", "unknown", 503)]  # never run again
    ask(sessions, "record_start")
    assert standby.round(new.epoch) == 1
    assert ari.created == 1 and len(ari.snoops) == 1
    assert [state for _, state, _ in rows(sessions)] == ["ended", "recording"]


def test_a_recording_that_ended_with_its_leg_meanwhile_is_ended_by_the_new_holder(sessions):
    ari = RecordAri({"1.1"})
    live(sessions, "1.1")
    old = take(sessions, holder="old")
    ask(sessions, "record_start")
    assert worker(sessions, old, ari).round(old.epoch) == 1
    kill(sessions)
    ari.end("1.1")  # the call ends while nobody holds the machine
    new = take(sessions, holder="new")
    assert worker(sessions, new, ari).round(new.epoch) == 0
    assert rows(sessions) == [("1.1", "ended", new.epoch)]


def test_a_session_whose_leg_ended_is_ended_by_the_holders_sweep(sessions):
    ari = RecordAri({"1.1", "1.2"})
    lease = take(sessions)
    ask(sessions, "record_start", "1.1")
    ask(sessions, "record_start", "1.2")
    w = worker(sessions, lease, ari)
    assert w.round(lease.epoch) == 2
    live(sessions, "1.2")  # 1.1 ended: no longer in the live legs
    assert recording.Rows(sessions, 1, lease.epoch).sweep() == 1
    assert sorted((u, s) for u, s, _ in rows(sessions)) == [("1.1", "ended"), ("1.2", "recording")]
