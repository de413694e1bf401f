"""Whether a worker thread is stuck, for the systemd watchdog: a `Pulse` each thread marks.

A thread either works or waits in one of its own waits (a queue, a poll, a pause between
retries). Waiting for as long as it likes is fine: that is an idle thread. Working without
coming back to a wait for longer than a bound is not: the thread is stuck (a dead socket, a
lock never released, a loop that does not end), and the watchdog stops pinging systemd.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Protocol


class Pulse:
    """One thread's liveness: working since when, or waiting. Written by that thread only
    (two attribute stores, no lock: the GIL makes each atomic), read by the watchdog's."""

    def __init__(self) -> None:
        self._working_since: float | None = time.monotonic()  # None: in one of its waits
        self._thread: threading.Thread | None = None

    def attach(self) -> None:
        """Called by the thread itself as it starts: the pulse is that thread's."""
        self._thread = threading.current_thread()
        self._working_since = time.monotonic()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around one of the thread's waits: idle, however long it lasts."""
        self._working_since = None
        try:
            yield
        finally:
            self._working_since = time.monotonic()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """`event.wait(timeout)`, idle meanwhile."""
        with self.waiting():
            return event.wait(timeout)

    def stuck(self, bound: float) -> bool:
        """Whether the thread has worked `bound` seconds without waiting, or has died."""
        if self._thread is not None and not self._thread.is_alive():
            return True
        since = self._working_since
        return since is not None and time.monotonic() - since > bound


class Watched(Protocol):
    """A part of a process the watchdog asks (a recorder, by its writer's pulse)."""

    @property
    def name(self) -> str: ...

    def alive(self, bound: float) -> bool:
        """False when stuck: working `bound` seconds without coming back to a wait."""
        ...
