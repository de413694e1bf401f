"""The threaded recorder against FakeAri: reconnects, restarts, faults, two machines."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from pbxcontrol.db.models import LegHistory
from pbxcontrol.recorder.machine import MachineRecorder
from tests.fakeari import FakeAri, load_recording
from tests.recorder.conftest import history_ids, live_rows

RESTARTED = "2026-11-27T07:00:00.000+0000"


def wait_until(condition, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def split(name: str, label: str):
    """Events of a recording before and after the snapshot labelled `label`."""
    records = load_recording(name)
    info = records[0]["data"]["status"]["startup_time"]
    events = [r["data"] for r in records if r["type"] == "event"]
    cut = 0
    for record in records[1:]:
        if record["type"] == "channels" and record["label"] == label:
            break
        cut += record["type"] == "event"
    return info, events[:cut], events[cut:]


def converged(sessions, fake: FakeAri, machine: int = 1):
    return lambda: set(live_rows(sessions, machine)) == set(fake.live)


@pytest.fixture
def started(sessions):
    recorders = []

    def start(fake: FakeAri, machine: int = 1, **kwargs) -> MachineRecorder:
        rec = MachineRecorder(machine, fake, sessions, **kwargs)
        rec.start()
        recorders.append(rec)
        assert fake.connected.wait(5), "recorder did not connect"
        wait_until(rec.synced.is_set, what="first reconcile")
        return rec

    yield start
    for rec in recorders:
        rec.stop()


def emit_all(fake: FakeAri, events, deliver: bool = True) -> None:
    for event in events:
        fake.emit(event, deliver=deliver)


def test_live_events_become_legs_and_hangup_removes_them(sessions, started):
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    started(fake)
    emit_all(fake, before)
    wait_until(converged(sessions, fake), what="legs while answered")
    rows = live_rows(sessions)
    assert len(rows) == 2
    assert {r["status"] for r in rows.values()} == {"Up"}
    assert {r["direction"] for r in rows.values()} == {"in"}
    emit_all(fake, after)
    wait_until(lambda: not live_rows(sessions), what="legs gone after hangup")
    assert history_ids(sessions) == set(rows)


def test_missed_channel_destroyed_is_ended_on_reconnect(sessions, started):
    startup, before, after = split("phone_to_phone_answered", "answered")
    fake = FakeAri(startup)
    started(fake)
    emit_all(fake, before)
    wait_until(converged(sessions, fake))
    assert len(live_rows(sessions)) == 2
    fake.reachable = False
    fake.drop()
    emit_all(fake, after, deliver=False)  # the hangup happens while we are away
    assert fake.live == {}
    fake.reachable = True
    wait_until(lambda: not live_rows(sessions), what="missed hangup to be reconciled")
    with sessions() as s:
        causes = set(s.scalars(select(LegHistory.cause_txt)))
    assert causes == {"gone from Asterisk"}


def test_missed_channel_created_is_classified_from_its_linkedid_group(sessions, started):
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    fake.reachable = False
    rec = MachineRecorder(1, fake, sessions)
    rec.start()
    try:
        emit_all(fake, before, deliver=False)  # the call starts before we connect
        fake.reachable = True
        wait_until(converged(sessions, fake), what="legs from GET /channels")
        rows = live_rows(sessions)
        trunk = next(r for r in rows.values() if r["channel"].startswith("PJSIP/trunk1"))
        alice = next(r for r in rows.values() if r["channel"].startswith("PJSIP/alice"))
        assert trunk["uniqueid"] == trunk["callid"] == alice["callid"]
        for row in (trunk, alice):
            assert (row["stype"], row["scustomer"], row["direction"]) == ("external", 3, "in")
            assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "1001", 3)
            assert row["cnumber"] == "0201112222"
            assert row["answered"] > 0 and row["status"] == "Up"
    finally:
        rec.stop()


def test_asterisk_restart_while_disconnected_leaves_no_ghost_legs(sessions, started):
    startup, before, _ = split("phone_to_trunk_answered", "answered")
    fake = FakeAri(startup)
    started(fake)
    emit_all(fake, before)
    wait_until(converged(sessions, fake))
    old = set(live_rows(sessions))
    assert len(old) == 2
    fake.reachable = False
    fake.restart(RESTARTED)
    # After the restart a new call is already up, reusing nothing of the old ones.
    _, new_before, _ = split("phone_to_phone_answered", "answered")
    emit_all(fake, new_before, deliver=False)
    fake.reachable = True
    wait_until(converged(sessions, fake), what="convergence after restart")
    assert not old & set(live_rows(sessions))
    with sessions() as s:
        causes = dict(s.execute(select(LegHistory.uniqueid, LegHistory.cause_txt)).all())
    assert {causes[u] for u in old} == {"Asterisk restarted"}


def test_events_arriving_during_reconcile_are_applied_after_it(sessions, started):
    startup, before, after = split("ring_group_local", "answered")
    fake = FakeAri(startup)
    fake.reachable = False
    rec = MachineRecorder(1, fake, sessions)
    real_channels = fake.channels
    pending = list(after)

    def channels_then_more_events():
        snapshot = real_channels()
        # While our GET /channels is in flight, the call goes on and ends.
        while pending:
            fake.emit(pending.pop(0))
        return snapshot

    fake.channels = channels_then_more_events
    rec.start()
    try:
        emit_all(fake, before, deliver=False)
        fake.reachable = True
        wait_until(lambda: not pending, what="the reconcile")
        # Until the snapshot is written the table is empty, and so is Asterisk by now:
        # "converged" would hold before the recorder has done anything.
        wait_until(rec.synced.is_set, what="the snapshot written")
        wait_until(converged(sessions, fake), what="convergence")
        assert live_rows(sessions) == {}
    finally:
        rec.stop()


def test_two_machines_never_touch_each_others_legs(sessions, started):
    startup, before, _ = split("phone_to_phone_answered", "answered")
    one, two = FakeAri(startup), FakeAri(startup)
    started(one, machine=1)
    rec2 = started(two, machine=2, sweep_interval=0.2)
    emit_all(one, before)
    wait_until(converged(sessions, one, 1))
    emit_all(two, before)  # the same ids on the second machine: distinct legs
    wait_until(converged(sessions, two, 2))
    assert set(live_rows(sessions, 1)) == set(live_rows(sessions, 2)) == set(one.live)
    two.restart(RESTARTED)  # machine 2 restarts: its sweeps must end only its own legs
    wait_until(lambda: not live_rows(sessions, 2), what="machine 2 legs to end")
    rec2.synced.clear()
    wait_until(rec2.synced.is_set, what="another sweep of machine 2")
    assert set(live_rows(sessions, 1)) == set(one.live)
    assert {r["machine"] for r in live_rows(sessions).values()} == {1}


MALFORMED = [
    "this is not json",
    "[1, 2, 3]",
    '{"no": "type"}',
    '{"type": 42, "timestamp": "2026-11-27T06:00:00.000+0000"}',
    '{"type": "ChannelCreated", "timestamp": "yesterday", "channel": {}}',
    '{"type": "ChannelCreated", "timestamp": "2026-11-27T06:00:00.000+0000"}',
    '{"type": "ChannelStateChange", "timestamp": "2026-11-27T06:00:00.000+0000",'
    ' "channel": {"id": 5, "name": "PJSIP/x-1", "state": "Up",'
    ' "creationtime": "2026-11-27T06:00:00.000+0000"}}',
    '{"type": "ChannelDestroyed", "timestamp": "2026-11-27T06:00:00.000+0000", "cause": "x",'
    ' "channel": {"id": "1.1", "name": "PJSIP/x-1", "state": "Up",'
    ' "creationtime": "2026-11-27T06:00:00.000+0000"}}',
    '{"type": "Dial", "timestamp": "2026-11-27T06:00:00.000+0000", "peer": null}',
    b"\xff\xfe broken utf-8".decode("latin-1"),
]


def test_malformed_events_are_logged_and_skipped(sessions, started, caplog):
    startup, before, after = split("phone_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = started(fake)
    for raw in MALFORMED:
        fake.send_raw(raw)
    fake.send_raw('{"type": "SomethingNew", "timestamp": "2026-11-27T06:00:00.000+0000"}')
    emit_all(fake, before)
    wait_until(converged(sessions, fake))
    assert len(live_rows(sessions)) == 2
    assert rec.malformed == len(MALFORMED)
    assert "skipping malformed event" in caplog.text
    emit_all(fake, after)
    wait_until(lambda: not live_rows(sessions))


def test_a_late_event_never_resurrects_an_ended_leg(sessions, started):
    startup, before, after = split("phone_to_phone_answered", "answered")
    fake = FakeAri(startup)
    started(fake)
    emit_all(fake, before + after)
    wait_until(lambda: not live_rows(sessions) and len(history_ids(sessions)) == 2)
    destroyed = next(e for e in after if e["type"] == "ChannelDestroyed")
    late = copy.deepcopy(destroyed)
    late["type"] = "ChannelLeftBridge"
    late["bridge"] = {"id": "b1"}
    fake.send_raw(json.dumps(late))
    fake.send_raw(json.dumps({**late, "type": "ChannelVarset", "variable": "X", "value": "1"}))
    time.sleep(0.3)
    assert live_rows(sessions) == {}


class FlakyWriter:
    """The database unavailable to the recorder's writer thread until `healthy` is set: each
    of its statements fails as a lost database would (its transactions, on a pooled or a kept
    connection alike)."""

    def __init__(self, sessions) -> None:
        self.engine = sessions.kw["bind"]
        self.healthy = True
        self.failures = 0
        sa_event.listen(self.engine, "before_cursor_execute", self._statement)

    def _statement(self, *_args) -> None:
        if not self.healthy and threading.current_thread().name.endswith(" writer"):
            self.failures += 1
            raise OperationalError("statement", {}, Exception("server closed the connection"))

    def remove(self) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._statement)


def test_database_outage_loses_no_event(sessions, started):
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    flaky = FlakyWriter(sessions)
    rec = started(fake)
    flaky.healthy = False
    emit_all(fake, before)
    wait_until(lambda: flaky.failures >= 2, what="failing writes")
    assert live_rows(sessions) == {}
    flaky.healthy = True
    wait_until(converged(sessions, fake), what="catch-up after the outage")
    assert len(live_rows(sessions)) == 2
    emit_all(fake, after)
    wait_until(lambda: not live_rows(sessions))
    assert rec.malformed == 0
    flaky.remove()


def test_without_channelvars_linkedid_is_read_per_new_channel_and_bridge(sessions, started):
    startup, before, after = split("ring_group_local", "answered")
    fake = FakeAri(startup, channelvars=False)
    started(fake)
    stripped = [
        {
            **e,
            **{
                k: {kk: vv for kk, vv in e[k].items() if kk != "channelvars"}
                for k in ("channel", "caller", "peer")
                if isinstance(e.get(k), dict)
            },
        }
        for e in before
    ]
    # FakeAri keeps the true linkedid (from the recording) for its variable endpoint.
    for original, event in zip(before, stripped, strict=True):
        fake.emit(original, deliver=False)
        fake.send_raw(json.dumps(event))
    wait_until(converged(sessions, fake))
    rows = live_rows(sessions)
    truth = {cid: c["channelvars"]["CHANNEL(linkedid)"] for cid, c in fake.live.items()}
    assert {uid: r["callid"] for uid, r in rows.items()} == truth
    reads = [c for c in fake.rest_calls if c.startswith("variable")]
    created = {e["channel"]["id"] for e in before if e["type"] == "ChannelCreated"}
    bridged = [e for e in before if e["type"] == "ChannelEnteredBridge"]
    # Once when a channel appears, again when it enters a bridge (which may change it).
    assert {r.split()[1] for r in reads} == created
    assert len(reads) == len(created) + len(bridged)


def test_restarted_pbxcontrol_keeps_what_it_derived_before(sessions, started):
    startup, before, _ = split("ring_group_local", "answered")
    fake = FakeAri(startup)
    first = started(fake)
    emit_all(fake, before)
    wait_until(converged(sessions, fake))
    derived = live_rows(sessions)
    first.stop()
    # A new process: no events, only GET /channels (which has no Dial relations).
    second = MachineRecorder(1, fake, sessions)
    second.start()
    try:
        wait_until(second.synced.is_set)
        assert live_rows(sessions) == derived
    finally:
        second.stop()


def test_a_bug_in_the_writer_is_logged_and_recording_goes_on(sessions, started, caplog):
    startup, before, after = split("phone_to_phone_answered", "answered")
    fake = FakeAri(startup)
    rec = started(fake)
    real_changes, calls = rec.live.changes, []

    def changes_once_broken():
        if not calls:
            calls.append(1)
            raise RuntimeError("a bug")
        return real_changes()

    rec.live.changes = changes_once_broken
    emit_all(fake, before)
    wait_until(converged(sessions, fake), what="recovery after the bug")
    assert "writer failed; restarting it and resyncing" in caplog.text
    emit_all(fake, after)
    wait_until(lambda: not live_rows(sessions))


def test_garbage_from_the_rest_api_is_skipped_or_retried(sessions, started, caplog):
    startup, before, _ = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    fake.reachable = False
    real_channels, real_info = fake.raw_channels, fake.raw_info
    answers = iter([{"status": "not an object"}, {"no": "status"}])

    def info():
        # Two unusable answers first: the reconcile fails, is logged and retried.
        return next(answers, None) or real_info()

    def channels():
        return [
            *real_channels(),
            {"id": 7},
            "garbage",
            None,
            {"id": "x", "name": "PJSIP/x-1", "state": "Up", "creationtime": "never"},
        ]

    fake.raw_info, fake.raw_channels = info, channels
    rec = MachineRecorder(1, fake, sessions)
    rec.start()
    try:
        emit_all(fake, before, deliver=False)
        fake.reachable = True
        wait_until(rec.synced.is_set, what="a reconcile despite the garbage")
        wait_until(converged(sessions, fake))
        assert len(live_rows(sessions)) == 2
        assert "reconcile failed" in caplog.text
        assert "skipping a channel in GET /channels" in caplog.text
    finally:
        rec.stop()
