"""Bounded under any backlog (SPEC §12): the queue from a recorder's websocket reader to its
writer never holds more than its bound; past it, the recorder drops what was read, reconnects
and reconciles with Asterisk, so the legs are right again once the database keeps up."""

from __future__ import annotations

import json
import logging
import threading
import time

from pbxcontrol.recorder import store
from pbxcontrol.recorder.machine import MachineRecorder
from tests.fakeari import FakeAri, FakeStream
from tests.recorder.test_reconnect import converged, emit_all, split, wait_until

BOUND = 50_000  # characters of messages queued at most


class CountingAri(FakeAri):
    def __init__(self, startup: str) -> None:
        super().__init__(startup)
        self.opened = 0

    def open_events(self) -> FakeStream:
        self.opened += 1
        return super().open_events()


def test_a_writer_far_behind_drops_the_backlog_reconnects_and_reconciles(
    sessions, monkeypatch, caplog
):
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = CountingAri(startup)
    # takeover 60: the lease stays confirmed while the writer is stuck (not the point here).
    rec = MachineRecorder(1, fake, sessions, backlog=BOUND, takeover=60.0)
    rec.start()
    try:
        wait_until(rec.synced.is_set, what="recording")
        slow = threading.Event()  # the database is slow: a write waits for it
        real = store.write

        def slow_write(changes, machine, session):
            slow.wait(30)
            real(changes, machine, session)

        monkeypatch.setattr(store, "write", slow_write)
        caplog.set_level(logging.WARNING, "pbxcontrol.recorder")
        emit_all(fake, before)  # the writer takes some and is stuck writing them
        noise = json.dumps({"type": "ChannelDialplan", "pad": "x" * 1000})
        largest = 0
        first = fake.stream
        for _ in range(3 * BOUND // len(noise)):  # three times the bound, while it is stuck
            fake.send_raw(noise)
            largest = max(largest, rec.queue.size)
        wait_until(lambda: first is not None and first.closed, what="the websocket closed")
        time.sleep(0.2)
        largest = max(largest, rec.queue.size)
        assert largest <= BOUND
        assert "dropping them and reconciling" in caplog.text
        emit_all(fake, after[:1], deliver=False)  # meanwhile Asterisk goes on: nobody hears it
        slow.set()
        wait_until(lambda: fake.opened >= 2, what="a new websocket")
        wait_until(converged(sessions, fake), timeout=10, what="reconciled with Asterisk")
        assert "dropped" in caplog.text
    finally:
        rec.stop()
