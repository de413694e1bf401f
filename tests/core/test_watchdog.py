"""The systemd watchdog covers each part of a process that can hang (SPEC §12 Units): the HTTP
loop, the stream hub's thread and each recorder's writer. A stuck part stops the WATCHDOG=1
pings; a part that merely waits (no events, no streams) does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import text

from pbxcontrol.db import journal
from pbxcontrol.db.engine import make_engine
from pbxcontrol.liveness import Pulse
from pbxcontrol.service import lifecycle
from pbxcontrol.service import server as http_server
from tests.conftest import write_config
from tests.core.test_systemd import NO_ASTERISK, FakeNotifySocket


def pings_between(fake: FakeNotifySocket, seconds: float) -> list[float]:
    """The times of the WATCHDOG=1 pings that come in the next `seconds`."""
    deadline, seen = time.monotonic() + seconds, []
    while (left := deadline - time.monotonic()) > 0:
        fake.sock.settimeout(left)
        try:
            message = fake.sock.recv(4096).decode()
        except TimeoutError:
            break
        if message == "WATCHDOG=1":
            seen.append(time.monotonic())
    return seen


def drain(fake: FakeNotifySocket) -> None:
    """Forget the messages already sent (before what is measured next)."""
    fake.sock.settimeout(0.001)
    try:
        while True:
            fake.sock.recv(4096)
    except TimeoutError:
        pass


def longest_silence(start: float, pings: list[float], end: float) -> float:
    marks = [start, *pings, end]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def test_a_pulse_is_stuck_only_when_it_works_past_the_bound():
    pulse = Pulse()
    pulse.attach()
    with pulse.waiting():
        time.sleep(0.15)
        assert not pulse.stuck(0.1)  # waiting, however long
    assert not pulse.stuck(0.1)
    time.sleep(0.15)
    assert pulse.stuck(0.1)  # working for longer than the bound


def test_a_record_process_stops_pinging_while_its_writer_is_stuck(tmp_path, db_url):
    """`pbxcontrol record`: the writer holds the lease and waits for events (pings go on for
    many bounds); then a transaction of ours holds its machine's row, so its next write (its
    heartbeat, within 2 s: an idle writer writes nothing else) hangs on the lock: the pings
    stop until the lock is gone."""
    config = write_config(tmp_path, NO_ASTERISK, db=db_url)
    fake = FakeNotifySocket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": fake.path, "WATCHDOG_USEC": "1000000"}  # bound 1 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "record"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine = make_engine(db_url)
    try:
        fake.read_until("READY=1", 30)
        idle = pings_between(fake, 4.0)
        assert len(idle) >= 5, idle  # every 0.5 s while the writer waits 4 s for events
        with engine.begin() as conn:
            held = conn.execute(text("UPDATE machines SET holder = holder WHERE id = 1"))
            assert held.rowcount == 1, "the recorder has not made its machine's row"
            locked = time.monotonic()
            during = pings_between(fake, 6.0)  # ≤ 2 s to the heartbeat, 1 s of bound
            unlocked = time.monotonic()
        assert longest_silence(locked, during, unlocked) >= 2.5, during
        assert pings_between(fake, 3.0), "the pings did not come back after the lock"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "watchdog: machine 1's writer does not turn (stuck)" in err
        assert "watchdog: machine 1's writer turns again" in err
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def hanging_journal(monkeypatch):
    """Set the event to make the hub's next read of the journal's position hang (a dead
    socket) until it is cleared."""
    hang, released = threading.Event(), threading.Event()
    real_position = journal.position

    def position(conn):
        if hang.is_set() and threading.current_thread().name == "stream hub":
            released.wait(30)
        return real_position(conn)

    monkeypatch.setattr(journal, "position", position)
    yield hang
    released.set()


def test_a_stuck_stream_hub_stops_the_pings(rt, tmp_path, monkeypatch, hanging_journal):
    """`pbxcontrol api`: the HTTP loop turns, but the hub's round hangs in the database: the
    pings stop; idle (no stream open, nothing to read) they go on."""
    fake = FakeNotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", fake.path)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # every 0.3 s, bound 0.6 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    server = http_server.make_server(rt.app, http_server.listen("127.0.0.1", 0), 2, rt.streams)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    watchdog = lifecycle.ready(server)
    assert watchdog is not None and "the stream hub" in watchdog.checks
    try:
        assert len(pings_between(fake, 2.0)) >= 4
        hanging_journal.set()  # its next round (PostgreSQL: within a second) hangs
        deadline = time.monotonic() + 5
        while watchdog.checks["the stream hub"]() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.4)  # a ping the watchdog sent just before
        drain(fake)
        assert pings_between(fake, 1.5) == []
        assert watchdog.checks["the HTTP loop"]()  # the loop itself still turns
    finally:
        watchdog.stop()
        hanging_journal.clear()
        assert server.hub is not None
        server.hub.stop()
        server.close()
        loop.join(5)


def test_an_api_worker_whose_hub_is_stuck_exits_to_be_replaced(rt, monkeypatch, hanging_journal):
    """Systemd hears the first process only: an API worker watches itself and exits
    (status 70) when its hub is stuck, so that the supervisor forks a replacement."""
    exits: list[int] = []
    monkeypatch.setattr(lifecycle.os, "_exit", exits.append)  # os._exit would end pytest
    server = http_server.make_server(rt.app, http_server.listen("127.0.0.1", 0), 2, rt.streams)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    watch = lifecycle.worker_watch(0.2)
    assert watch is not None and lifecycle.worker_watch(None) is None
    watchdog = None
    try:
        watchdog = watch(server)
        time.sleep(1.0)
        assert exits == []  # idle: no stream, nothing to read
        hanging_journal.set()
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exits == [lifecycle.EXIT_STUCK]
    finally:
        if watchdog is not None:
            watchdog.stop()  # before os._exit is the real one again
        hanging_journal.clear()
        assert server.hub is not None
        server.hub.stop()
        server.close()
        loop.join(5)
