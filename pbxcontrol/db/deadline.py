"""A deadline on every PostgreSQL round trip, enforced by the client.

A server that stops answering without closing its sockets — frozen (SIGSTOP), or a host whose
kernel still acknowledges while PostgreSQL hangs — leaves a statement waiting for ever: the
server's own `statement_timeout` does not run, TCP keepalives are answered by the kernel, and
psycopg has no timeout of its own on a query. So each round trip is armed with a deadline
when it starts (engine.py's events: statements, commits, rollbacks, the pool's ping and reset),
and one thread per process shuts the socket of a connection still busy past its deadline: the
driver then fails the call as a lost connection (OperationalError, an outage), and the pool
replaces the connection. Nothing is closed under the driver: `shutdown` ends the TCP stream
but leaves the descriptor to its owner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("pbxcontrol.db")

TICK = 0.25  # seconds between the watcher's looks


class Watcher:
    """The armed round trips of this process, and the thread that enforces them. Forks are
    safe: the thread stops before a fork (nothing else may run then) and starts again on the
    next arm; a child forgets its parent's connections."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self.fired = 0  # round trips cut (tests look)
        self._armed: dict[int, tuple[float, Any]] = {}  # id(connection) -> (deadline, it)
        self._lock = threading.Lock()  # starting and stopping the thread
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hooked = False

    def arm(self, connection: Any, seconds: float) -> None:
        """A round trip on `connection` (a psycopg connection) starts: cut it after `seconds`."""
        self._armed[id(connection)] = (time.monotonic() + seconds, connection)
        if self._thread is None:  # the first trip, or the first since a fork
            self._start()

    def disarm(self, connection: Any) -> None:
        self._armed.pop(id(connection), None)

    @contextlib.contextmanager
    def bound(self, connection: Any, seconds: float) -> Iterator[None]:
        """Round trips made in the block on `connection` end within `seconds`."""
        self.arm(connection, seconds)
        try:
            yield
        finally:
            self.disarm(connection)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            if not self._hooked:
                os.register_at_fork(
                    before=self._before_fork,
                    after_in_parent=self._after_fork_in_parent,
                    after_in_child=self._after_fork_in_child,
                )
                self._hooked = True
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="db deadlines", daemon=True)
            self._thread.start()

    def _before_fork(self) -> None:
        """No thread at a fork (forking a process with threads is unsafe); the parent starts
        it again at once if round trips are armed, the child at its first arm."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stop.set()
                thread.join()

    def _after_fork_in_parent(self) -> None:
        if self._armed:  # round trips of other threads go on: watch them again
            self._start()

    def _after_fork_in_child(self) -> None:
        self._armed.clear()  # the parent's connections: never cut them from here

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.tick):
            now = time.monotonic()
            for key, (deadline, connection) in list(self._armed.items()):
                if now < deadline:
                    continue
                # Only if nobody armed it again meanwhile (a new round trip).
                if self._armed.get(key, (None,))[0] != deadline:
                    continue
                self._armed.pop(key, None)
                if busy(connection):
                    self.fired += 1
                    log.warning(
                        "database round trip still unanswered after its deadline: "
                        "dropping the connection"
                    )
                    cut(connection)


def busy(connection: Any) -> bool:
    """Whether a command is in flight on the psycopg `connection` (libpq: PQTRANS_ACTIVE)."""
    try:
        return int(connection.pgconn.transaction_status) == 1
    except Exception:  # closed meanwhile
        return False


def cut(connection: Any) -> None:
    """End the TCP stream of `connection`: its owner's wait returns, and psycopg raises."""
    with contextlib.suppress(Exception):
        fd = connection.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


#: The process's watcher: one thread for every engine (started on the first armed trip).
watcher = Watcher()
