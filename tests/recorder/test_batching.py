"""How the writer cuts what was read into writes (recorder/machine.py `_take`): a backlog goes
in as few writes as `batch_size` and BATCH_SECONDS allow — in a burst a leg's many events share
one row write — and neither bound is exceeded, so a burst's first events never wait for the
whole burst."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import event

from pbxcontrol.recorder import machine as machine_module
from pbxcontrol.recorder import store
from tests.conftest import postgresql_only
from tests.fakeari import FakeAri
from tests.recorder.test_reconnect import converged, emit_all, split, started, wait_until

__all__ = ["started"]  # the fixture, used by name

PADDING = 300  # events the recorder reads and has no use for, queued before the real ones


class HeldWrites:
    """store.write_prepared held at the gate once armed; counts the writes that carry legs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed, self.gate, self.held = False, threading.Event(), threading.Event()
        self.writes = 0
        real = store.write_prepared

        def write(batch, conn, fence=None):
            changes = batch.changes
            if (changes.inserts or changes.updates or changes.gone) and self.armed:
                self.writes += 1
                self.held.set()
                assert self.gate.wait(20), "the test never opened the gate"
            return real(batch, conn, fence)

        monkeypatch.setattr(store, "write_prepared", write)


class Rounds:
    """The sequence number of the last event applied at each of the writer's writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[int] = []
        real = machine_module.MachineRecorder.flush

        def flush(recorder, machine_row: bool = False) -> bool:
            self.applied.append(recorder.status.applied)
            return real(recorder, machine_row)

        monkeypatch.setattr(machine_module.MachineRecorder, "flush", flush)

    def steps(self, since: int) -> list[int]:
        """Events taken between consecutive writes, from write `since` on."""
        marks = self.applied[since:]
        return [b - a for a, b in zip(marks, marks[1:], strict=False) if b > a]


def backlog(fake: FakeAri, rec, held: HeldWrites) -> int:
    """The writer stuck in a write while the reader queues the padding, then a whole call;
    returns how many writes came before the gate opens."""
    _, before, _ = split("trunk_to_phone_answered", "answered")
    held.armed = True
    emit_all(fake, before[:1])  # taken and written: the writer waits at the gate
    assert held.held.wait(5), "the first write never came"
    read = rec.received
    for _ in range(PADDING):
        fake.send_raw(json.dumps({"type": "DeviceStateChanged", "pad": "x" * 100}))
    emit_all(fake, before[1:])
    total = read + PADDING + len(before) - 1
    wait_until(lambda: rec.received >= total, what="everything read")
    return total


def recorded(sessions, started, monkeypatch, batch_size: int) -> tuple[HeldWrites, list[int]]:
    """Record a backlog behind a held write; the writes it took and the events per write."""
    startup, _, _ = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    held, rounds = HeldWrites(monkeypatch), Rounds(monkeypatch)
    rec = started(fake, batch_size=batch_size)
    backlog(fake, rec, held)
    mark = len(rounds.applied) - 1  # the write held at the gate
    held.gate.set()
    wait_until(converged(sessions, fake), what="the legs written")
    return held, rounds.steps(mark)


def test_a_backlog_is_written_in_one_write(sessions, started, monkeypatch):
    held, steps = recorded(sessions, started, monkeypatch, batch_size=100_000)
    assert held.writes == 2  # the held one, then everything queued behind it at once
    assert steps == [PADDING + len(split("trunk_to_phone_answered", "answered")[1]) - 1]


def test_batch_size_caps_one_write(sessions, started, monkeypatch):
    held, steps = recorded(sessions, started, monkeypatch, batch_size=100)
    assert len(steps) >= 3 and max(steps) <= 100


def test_a_burst_is_written_as_it_goes_not_after_the_whole_burst(sessions, started, monkeypatch):
    monkeypatch.setattr(machine_module, "BATCH_SECONDS", 0.0)
    held, steps = recorded(sessions, started, monkeypatch, batch_size=100_000)
    # Out of time at once: a write after every 64 events taken, never the whole backlog.
    assert len(steps) >= PADDING // 64 and max(steps) <= 64


@postgresql_only("the JSON-document writes are PostgreSQL's (pbxcontrol/db/legwrites.py)")
def test_postgresql_writes_each_kind_of_leg_write_as_one_statement(sessions, started):
    """No executemany (a statement per row, its parameters converted while the transaction is
    open): a whole call's legs — new, changed, ended into the history, gone — one statement
    per kind, and the legs as Asterisk has them."""
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = FakeAri(startup)
    engine = sessions.kw["bind"]
    seen: list[tuple[str, bool]] = []

    def statement(_conn, _cursor, sql, _params, _context, executemany):
        words = sql.split(None, 3)
        if words[0] in ("INSERT", "UPDATE", "DELETE") and words[2 - (words[0] == "UPDATE")] in (
            "legs",
            "leg_history",
        ):
            seen.append((" ".join(words[:3]), executemany))

    event.listen(engine, "before_cursor_execute", statement)
    try:
        started(fake, batch_size=100_000)
        emit_all(fake, before[:1])  # the first leg, then what changes it
        wait_until(converged(sessions, fake), what="the first leg written")
        emit_all(fake, before[1:])
        wait_until(converged(sessions, fake), what="the call's legs written")
        emit_all(fake, after)
        wait_until(converged(sessions, fake), what="the call's end written")
        wait_until(lambda: ("DELETE FROM legs", False) in seen, what="the ended legs gone")
    finally:
        event.remove(engine, "before_cursor_execute", statement)
    assert not [s for s in seen if s[1]], seen  # never executemany
    kinds = {s[0] for s in seen}
    wanted = {"INSERT INTO legs", "UPDATE legs AS", "INSERT INTO leg_history", "DELETE FROM legs"}
    assert wanted <= kinds, kinds
