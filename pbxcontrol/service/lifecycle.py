"""The serving process's life: stopping on SIGTERM/SIGINT, and its malloc arenas."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import tempfile
import threading
from typing import TYPE_CHECKING

from pbxcontrol.service import notify

if TYPE_CHECKING:
    from pbxcontrol.service.server import Server

log = logging.getLogger("pbxcontrol")


class Stop:
    """SIGTERM/SIGINT: stop accepting, finish in-flight work, close cleanly. Installed before
    anything starts, so a signal during start-up stops cleanly too."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.serving = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            return
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.event.set()
        if self.serving:
            raise KeyboardInterrupt  # breaks waitress out of its loop, which then drains


def run_until_stopped(stop: Stop, server: Server | None) -> None:
    if server is None:
        stop.event.wait()
        return
    with contextlib.suppress(KeyboardInterrupt):
        stop.serving = True
        if not stop.event.is_set():
            server.run()
    server.close()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with 8 HTTP threads churning through
    answers the heap grew in 16 MB steps (soak: 68 -> 225 MB). Two arenas kept it at ~126 MB.
    Must run before any thread starts; a no-op where libc is not glibc."""
    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, arenas)


def metrics_directory(processes: int) -> str | None:
    """With several HTTP processes, a private directory for prometheus-client's multiprocess
    mode, named in PROMETHEUS_MULTIPROC_DIR: set before prometheus_client is imported (it
    chooses its value class then) and before any fork. Removed when this process exits
    (the forked workers leave with os._exit, which does not run atexit)."""
    if processes < 2:
        return None
    path = tempfile.mkdtemp(prefix="pbxcontrol-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def ready(server: Server | None, supervisor) -> notify.Watchdog | None:
    """Tell systemd the service is up (READY=1) and, under WatchdogSec=, ping it while the
    HTTP loop turns (a function run through waitress's trigger comes back) and the API
    workers' supervisor lives."""
    notify.notify("READY=1")
    interval = notify.watchdog_interval()
    if interval is None:
        return None
    checks = []
    if server is not None:
        checks.append(notify.monotonic_probe(server.trigger(), 2 * interval))
    if supervisor is not None:
        checks.append(supervisor.alive)
    watchdog = notify.Watchdog(lambda: all(check() for check in checks), interval)
    watchdog.start()
    return watchdog
