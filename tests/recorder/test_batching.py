"""How the writer cuts what was read into writes (recorder/machine.py `_take`): a backlog goes
in as few writes as `batch_size` and BATCH_SECONDS allow — in a burst a leg's many events share
one row write — and neither bound is exceeded, so a burst's first events never wait for the
whole burst."""

from __future__ import annotations

import json
import threading

import pytest

from pbxcontrol.recorder import machine as machine_module
from pbxcontrol.recorder import store
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

        def write(batch, session):
            changes = batch.changes
            if (changes.inserts or changes.updates or changes.gone) and self.armed:
                self.writes += 1
                self.held.set()
                assert self.gate.wait(20), "the test never opened the gate"
            real(batch, session)

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
