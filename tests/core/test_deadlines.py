"""The client's deadline on a round trip (pbxcontrol/db/deadline.py): a connection still busy
past its deadline has its TCP stream ended (its owner's wait returns, the driver raises); an
idle one, or one armed again for a new round trip, is left alone; a forked child never cuts
its parent's connections. (Against a frozen server: tests/core/test_database_down.py.)"""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

import pytest

from pbxcontrol.db.deadline import Watcher

BUSY, IDLE = 1, 0  # libpq's PQTRANS_ACTIVE (a command in flight), PQTRANS_IDLE


class Connection:
    """What the watcher reads of a psycopg connection: its socket and transaction status."""

    def __init__(self, status: int) -> None:
        self.ours, self.server = socket.socketpair()
        self.pgconn = SimpleNamespace(socket=self.ours.fileno(), transaction_status=status)

    def cut(self, within: float) -> bool:
        """Whether the server's end sees the stream end within `within` seconds."""
        self.server.settimeout(within)
        try:
            return self.server.recv(1) == b""
        except TimeoutError:
            return False


@pytest.fixture
def watcher():
    return Watcher(tick=0.02)


def test_a_busy_round_trip_is_cut_past_its_deadline(watcher):
    busy = Connection(BUSY)
    started = time.monotonic()
    watcher.arm(busy, 0.2)
    assert busy.cut(within=2.0)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert watcher.fired == 1


def test_an_idle_connection_or_a_disarmed_one_is_left_alone(watcher):
    idle, done = Connection(IDLE), Connection(BUSY)
    watcher.arm(idle, 0.1)
    watcher.arm(done, 0.1)
    watcher.disarm(done)  # its round trip ended in time
    assert not idle.cut(within=0.4) and not done.cut(within=0.1)
    assert watcher.fired == 0


def test_a_new_round_trip_gets_a_new_deadline(watcher):
    busy = Connection(BUSY)
    watcher.arm(busy, 0.15)
    time.sleep(0.1)
    watcher.arm(busy, 1.0)  # the next statement began
    assert not busy.cut(within=0.4)
    assert busy.cut(within=2.0)


def test_a_forked_child_never_cuts_its_parents_connections(watcher):
    busy = Connection(BUSY)
    watcher.arm(busy, 0.3)
    pid = os.fork()
    if pid == 0:  # the child: the parent's armed connection is forgotten
        forgotten = not watcher._armed
        watcher.arm(Connection(IDLE), 0.05)  # its own thread starts
        time.sleep(0.5)
        os._exit(0 if forgotten and watcher.fired == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert busy.cut(within=2.0)  # the parent's watcher, started again, still cuts it
    assert watcher.fired == 1
