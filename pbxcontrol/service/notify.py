"""systemd's notify protocol (sd_notify(3)): READY, WATCHDOG, STOPPING, EXTEND_TIMEOUT_USEC.

The protocol is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or an abstract name starting with '@'). Without that variable (not
started by systemd with Type=notify) every call is a no-op, so nothing here needs systemd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger("pbxcontrol")


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1"); False when there is no socket or it refuses."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: a leading NUL byte on Linux
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("systemd notify %r failed: %s", message, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec= (as sd_watchdog_enabled(3) advises), in seconds; None
    when no watchdog is asked of this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """A thread that sends WATCHDOG=1 every `interval` seconds while every check says its
    part of the process still turns (the HTTP loop, the stream hub, each recorder's writer).
    When one stops saying so, the pings stop and systemd kills and restarts the service
    after WatchdogSec=: a hung process does not stay up. `on_stuck` (an API worker, which
    systemd does not watch) is told the names of the parts that stopped."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], bool]],
        interval: float,
        *,
        ping: Callable[[], object] = lambda: notify("WATCHDOG=1"),
        on_stuck: Callable[[list[str]], object] | None = None,
    ) -> None:
        self.checks = dict(checks)
        self.interval = interval
        self.ping = ping
        self.on_stuck = on_stuck
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._failing: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            failing = [name for name, check in self.checks.items() if not check()]
            if self._stop.is_set():
                return  # stopping: the threads checked may be ending on purpose
            if not failing:
                if self._failing:
                    log.warning("watchdog: %s turns again", ", ".join(self._failing))
                self._failing = []
                self.ping()
            elif failing != self._failing:
                self._failing = failing
                log.error("watchdog: %s does not turn (stuck)", ", ".join(failing))
                if self.on_stuck is not None:
                    self.on_stuck(failing)


@contextlib.contextmanager
def extending_start(step: float = 60.0) -> Iterator[None]:
    """While the block runs (a long migration in `initdb`, run by ExecStartPre), ask systemd
    every `step / 3` seconds for `step` more seconds of start-up time (EXTEND_TIMEOUT_USEC),
    so TimeoutStartSec= can stay short for a start that hangs elsewhere."""
    if "NOTIFY_SOCKET" not in os.environ:
        yield
        return
    done = threading.Event()

    def extend() -> None:
        while True:
            notify(f"EXTEND_TIMEOUT_USEC={int(step * 1e6)}")
            if done.wait(step / 3):
                return

    thread = threading.Thread(target=extend, name="extend start", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(1.0)


def monotonic_probe(
    pull: Callable[[Callable[[], None]], None], within: float
) -> Callable[[], bool]:
    """alive() for a Watchdog over an event loop: each call asks the loop (through `pull`,
    which runs a function on the loop's thread) to note the time, and says whether the loop
    did so within the last `within` seconds."""
    last = [time.monotonic()]

    def seen() -> None:
        last[0] = time.monotonic()

    def alive() -> bool:
        with contextlib.suppress(OSError):  # the loop closed: stopping, say no more
            pull(seen)
        return time.monotonic() - last[0] < within

    return alive
