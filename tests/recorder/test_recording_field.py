"""`recording` and `recording_paused` of a leg we record through a snoop (SPEC §11.8,
recorder/recording.py). The list learns of them from the holder's executor (`Recorded`, through
the writer's queue), not from ARI: ARI sends no event for a pause, and a variable set on the
recording snoop — the first design — waits on a real Asterisk until the recording ends, so the
list never showed it (the fake control Asterisk, tests/recorder/record_ari.py, does the same).

First LiveLegs alone; then the threaded recorder of one machine (websocket events from FakeAri,
control from RecordAri) with its intent worker: each change reaches the leg's row in the
database — what every list and stream reads — within 1 s, on each engine."""

from __future__ import annotations

import threading
import time

import orjson

from pbxcontrol.ari.events import parse_event
from pbxcontrol.recorder.leg import Recorded
from pbxcontrol.recorder.machine import MachineRecorder
from tests.fakeari import FakeAri
from tests.recorder.conftest import live_rows
from tests.recorder.record_ari import RecordAri
from tests.recorder.test_reconnect import split, wait_until
from tests.recorder.test_recording_sessions import ask
from tests.recorder.test_rules import Call, alice_calls_bob, chan

PATH = "/var/spool/asterisk/recording/3/2026/12/06/a-7.wav"
MIXMONITOR = "/var/spool/asterisk/monitor/a.wav"
WITHIN = 1.0  # SPEC §11.8: each change in every stream within 1 s


def recording_event(kind: str, snoop: str, name: str):
    raw = {
        "type": kind,
        "timestamp": "2027-01-15T08:00:02.000+0000",
        "recording": {"name": name, "format": "wav", "state": "done",
                      "target_uri": f"channel:{snoop}"},
    }  # fmt: skip
    event = parse_event(orjson.dumps(raw))
    assert event is not None
    return event


def shown(call: Call, uid: str) -> tuple[str, int]:
    row = call.rows()[uid]
    return row["recording"], row["recording_paused"]


def test_the_executors_news_reach_the_snooped_leg_and_only_it():
    call = Call()
    alice_calls_bob(call)
    call.live.recorded(Recorded("a", PATH, True))
    assert (shown(call, "a"), shown(call, "b")) == ((PATH, 0), ("", 0))
    call.live.recorded(Recorded("a", PATH, True, paused=1))
    assert shown(call, "a") == (PATH, 1)  # keeps its path while paused
    call.live.recorded(Recorded("a", PATH, True))
    assert shown(call, "a") == (PATH, 0)
    call.live.recorded(Recorded("a", PATH, True, paused=1))
    call.live.recorded(Recorded("a", PATH, False))
    assert shown(call, "a") == ("", 0)
    call.live.recorded(Recorded("gone", PATH, True))  # a leg that ended meanwhile: nothing
    assert set(call.rows()) == {"a", "b"}


def test_the_end_of_our_recording_never_clears_a_mixmonitor_the_leg_shows():
    call = Call()
    alice_calls_bob(call)
    call.live.legs["a"].recording = MIXMONITOR  # the dialplan's (ChannelVarset)
    call.live.recorded(Recorded("a", PATH, False))
    assert shown(call, "a") == (MIXMONITOR, 0)


def test_our_snoop_is_never_a_leg_and_its_recording_ending_by_itself_clears_the_field():
    call = Call()
    alice_calls_bob(call)
    call.see(chan("pbxc-7-record", "Snoop/a-00000001"))  # ChannelCreated of our snoop
    call.live.recorded(Recorded("a", PATH, True))
    call.apply(recording_event("RecordingStarted", "pbxc-7-record", "3/2026/12/06/a-7"))
    assert set(call.rows()) == {"a", "b"} and shown(call, "a") == (PATH, 0)
    call.apply(recording_event("RecordingFinished", "pbxc-7-record", "3/2026/12/06/other-8"))
    assert shown(call, "a") == (PATH, 0)  # another recording's end
    call.apply(recording_event("RecordingFailed", "pbxc-7-record", "3/2026/12/06/a-7"))
    assert shown(call, "a") == ("", 0)  # a full disk, say: the list shows it no more


def test_start_pause_unpause_stop_reach_the_legs_row_within_a_second(sessions):
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    control, wake = RecordAri(set()), threading.Event()
    recorder = MachineRecorder(1, fake, sessions, control=control, wake=wake)  # type: ignore[arg-type]
    recorder.start()
    try:
        for event in before:
            fake.emit(event)
        wait_until(lambda: len(live_rows(sessions, 1)) == 2, what="the call's two legs")
        uid = sorted(live_rows(sessions, 1))[0]
        control.live.add(uid)
        took = []
        for function, want in [
            ("record_start", (True, 0)),
            ("record_pause", (True, 1)),
            ("record_start", (True, 0)),  # "Starts/unpauses"
            ("record_stop", (False, 0)),
        ]:
            ask(sessions, function, uid)
            asked = time.monotonic()
            wake.set()
            wait_until(lambda w=want: _row_shows(sessions, uid, *w), WITHIN, f"{function}")
            took.append(time.monotonic() - asked)
        assert control.created == 1 and control.recordings == {} and control.snoops == {}
        assert max(took) < WITHIN
    finally:
        recorder.stop()


def _row_shows(sessions, uid: str, recording: bool, paused: int) -> bool:
    row = live_rows(sessions, 1)[uid]
    path_ok = row["recording"].endswith(".wav") if recording else row["recording"] == ""
    return path_ok and row["recording_paused"] == paused
