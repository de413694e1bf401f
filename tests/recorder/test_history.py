"""[recorder] history_days: ended legs older than that leave the history table, per machine,
in short transactions; 0 keeps them forever."""

from __future__ import annotations

from sqlalchemy import insert, select

from pbxcontrol.db.models import LegHistory
from pbxcontrol.recorder import retention
from pbxcontrol.recorder.machine import MachineRecorder
from tests.fakeari import FakeAri

NOW = 1_800_000_000.0
DAY = 86400.0


def add_history(sessions, machine: int, ages_days: list[float]) -> None:
    with sessions.begin() as session:
        session.execute(
            insert(LegHistory),
            [
                dict(
                    machine=machine,
                    uniqueid=f"{machine}.{i}",
                    channel=f"PJSIP/x-{i}",
                    start=int(NOW - age * DAY) - 60,
                    ended=NOW - age * DAY,
                )
                for i, age in enumerate(ages_days)
            ],
        )


def remaining(sessions) -> list[str]:
    with sessions() as session:
        return sorted(session.execute(select(LegHistory.uniqueid)).scalars())


def recorder(sessions, days: int) -> MachineRecorder:
    """A recorder holding machine 1's lease (its writes, pruning included, are fenced)."""
    rec = MachineRecorder(1, FakeAri("2026-11-27T06:00:00.000+0000"), sessions, history_days=days)
    with sessions.begin() as session:
        rec.lease.ensure_row(session, rec.name)
        assert rec.lease.try_acquire(session)
    return rec


def test_old_history_of_this_machine_goes_and_the_rest_stays(sessions):
    add_history(sessions, 1, [40, 31, 29, 0.5])
    add_history(sessions, 2, [40])  # another machine's recorder prunes its own
    assert recorder(sessions, 30).prune_history(NOW) == 2
    assert remaining(sessions) == ["1.2", "1.3", "2.0"]


def test_zero_keeps_everything(sessions):
    add_history(sessions, 1, [4000, 40])
    assert recorder(sessions, 0).prune_history(NOW) == 0
    assert remaining(sessions) == ["1.0", "1.1"]


def test_a_backlog_goes_in_chunks(sessions, monkeypatch):
    monkeypatch.setattr(retention, "PRUNE_CHUNK", 3)
    add_history(sessions, 1, [50] * 10 + [1])
    assert recorder(sessions, 30).prune_history(NOW) == 10
    assert remaining(sessions) == ["1.10"]


def test_the_running_recorder_prunes_at_its_sweeps(sessions):
    import time

    add_history(sessions, 1, [0])  # ended "now" in the test's clock: 2027, so kept
    with sessions.begin() as session:  # and one that ended 31 days before this real moment
        session.execute(
            insert(LegHistory),
            [
                dict(
                    machine=1,
                    uniqueid="old",
                    channel="PJSIP/old",
                    start=0,
                    ended=time.time() - 31 * DAY,
                )
            ],
        )
    fake = FakeAri("2026-11-27T06:00:00.000+0000")
    rec = MachineRecorder(1, fake, sessions, history_days=30, sweep_interval=0.2)
    rec.start()
    try:
        deadline = time.monotonic() + 8
        while "old" in remaining(sessions) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert remaining(sessions) == ["1.0"]
    finally:
        rec.stop()
