"""Tables that grow have a retention (SPEC §12): the call-control audit (`[recorder]
audit_days`) and the change journal (`journal_seconds`) are pruned by the recorders, as the
history is (tests/recorder/test_history.py)."""

from __future__ import annotations

import time

from sqlalchemy import func, insert, select

from pbxcontrol.db import journal
from pbxcontrol.db.models import Base
from pbxcontrol.recorder import retention
from pbxcontrol.recorder.machine import MachineRecorder
from tests.fakeari import FakeAri

AUDIT = Base.metadata.tables["call_actions"]
NOW = 1_800_000_000.0
DAY = 86400.0
STARTUP = "2026-11-27T06:00:00.000+0000"


def add_audit(sessions, ages: dict[str, float], now: float = NOW) -> None:
    """One call_actions row per username, written `age` days before `now`."""
    with sessions.begin() as session:
        session.execute(
            insert(AUDIT),
            [
                dict(
                    at=now - age * DAY,
                    username=name,
                    customer_id=1,
                    action="hangup",
                    legs="[]",
                    code=204,
                    message="",
                )
                for name, age in ages.items()
            ],
        )


def audit_left(sessions) -> list[str]:
    with sessions() as session:
        return sorted(session.execute(select(AUDIT.c.username)).scalars())


def holder(sessions, **kwargs) -> MachineRecorder:
    """A recorder holding machine 1's lease (its writes, pruning included, are fenced)."""
    rec = MachineRecorder(1, FakeAri(STARTUP), sessions, **kwargs)
    with sessions.begin() as session:
        rec.lease.ensure_row(session, rec.name)
        assert rec.lease.try_acquire(session)
    return rec


def test_audit_rows_older_than_audit_days_go_and_the_rest_stay(sessions):
    add_audit(sessions, {"ancient": 400, "old": 366, "recent": 364, "today": 0.1})
    holder(sessions, audit_days=365).prune_history(NOW)
    assert audit_left(sessions) == ["recent", "today"]


def test_audit_days_zero_keeps_the_audit_forever(sessions):
    add_audit(sessions, {"ancient": 4000})
    holder(sessions, audit_days=0).prune_history(NOW)
    assert audit_left(sessions) == ["ancient"]


def test_an_audit_backlog_goes_in_chunks_and_at_most_hourly(sessions, monkeypatch):
    monkeypatch.setattr(retention, "PRUNE_CHUNK", 3)
    monkeypatch.setattr(retention, "PRUNE_CHUNKS", 2)
    add_audit(sessions, {f"old{i:02}": 400 for i in range(10)} | {"new": 1})
    rec = holder(sessions, audit_days=30)
    rec.prune_history(NOW)
    assert len(audit_left(sessions)) == 11 - 6  # two chunks of three in one sweep
    rec.prune_history(NOW + 60)
    assert len(audit_left(sessions)) == 5  # the next sweep, a minute later: not yet
    rec.prune_history(NOW + retention.AUDIT_PRUNE_EVERY)
    assert len(audit_left(sessions)) == 5 - 4  # an hour later: the rest of the backlog
    assert audit_left(sessions) == ["new"]


def journal_entries(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(journal.JOURNAL)) or 0


def test_the_running_recorder_prunes_the_audit_and_the_journal_at_its_sweeps(sessions):
    now = time.time()
    add_audit(sessions, {"last year": 366, "yesterday": 1}, now=now)
    fake = FakeAri(STARTUP)
    rec = MachineRecorder(
        1, fake, sessions, audit_days=365, journal_seconds=0.5, sweep_interval=0.3
    )
    rec.start()
    try:
        assert fake.connected.wait(5)
        fake.emit(channel_created("1.1"))  # a leg: an entry in the journal
        deadline = time.monotonic() + 8
        while journal_entries(sessions) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journal_entries(sessions) > 0
        while (
            journal_entries(sessions) or audit_left(sessions) != ["yesterday"]
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert audit_left(sessions) == ["yesterday"]
        assert journal_entries(sessions) == 0  # older than journal_seconds: gone
    finally:
        rec.stop()


def channel_created(channel_id: str) -> dict:
    return {
        "type": "ChannelCreated",
        "timestamp": "2026-11-27T06:00:01.000+0000",
        "channel": {
            "id": channel_id,
            "name": "PJSIP/alice-00000001",
            "state": "Ring",
            "caller": {"name": "", "number": "1001"},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {"context": "phones", "exten": "1002", "priority": 1},
            "creationtime": "2026-11-27T06:00:01.000+0000",
            "language": "en",
        },
    }
