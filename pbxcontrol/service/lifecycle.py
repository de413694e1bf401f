"""The serving process's life: stopping on SIGTERM/SIGINT, its malloc arenas, and what its
systemd watchdog (and each API worker's own) watches."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pbxcontrol.liveness import Watched
from pbxcontrol.service import notify

if TYPE_CHECKING:
    from pbxcontrol.service.server import Server

log = logging.getLogger("pbxcontrol")

EXIT_STUCK = 70  # an API worker whose loop or hub is stuck (EX_SOFTWARE); it is replaced


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
    map_big_blocks()


def map_big_blocks(threshold: int = 1 << 20) -> None:
    """Blocks of `threshold` bytes or more (a password check's 19 MiB of argon2 memory, a big
    answer) are mapped on their own and given back to the kernel when freed. Left to itself
    glibc raises this threshold to the largest block freed so far (up to 32 MiB): after the
    first password check, argon2's blocks came from the arenas, which kept them (a flood of
    logins: +78 MB, bench/loginflood.py). A no-op where libc is not glibc."""
    m_mmap_threshold = -3
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, threshold)


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


def checks(
    server: Server | None,
    supervisor: Any = None,
    recorders: Sequence[Watched] = (),
    bound: float = 30.0,
) -> dict[str, Callable[[], bool]]:
    """What the watchdog watches, by name: the HTTP loop turns (a function run through
    waitress's trigger comes back within `bound` seconds), the stream hub's thread and each
    recorder's writer do not work `bound` seconds without coming back to one of their waits
    (pbxcontrol.liveness), and the API workers' supervisor lives."""
    found: dict[str, Callable[[], bool]] = {}
    if server is not None:
        found["the HTTP loop"] = notify.monotonic_probe(server.trigger(), bound)
        hub = server.hub
        if hub is not None:
            found["the stream hub"] = lambda: hub.alive(bound)
    if supervisor is not None:
        found["the API workers' supervisor"] = supervisor.alive
    for recorder in recorders:
        found[f"{recorder.name}'s writer"] = functools.partial(recorder.alive, bound)
    return found


def ready(
    server: Server | None, supervisor: Any = None, recorders: Sequence[Watched] = ()
) -> notify.Watchdog | None:
    """Tell systemd the service is up (READY=1) and, under WatchdogSec=, ping it while every
    part of `checks` turns: WatchdogSec= bounds how long any of them may be stuck."""
    notify.notify("READY=1")
    interval = notify.watchdog_interval()
    if interval is None:
        return None
    watchdog = notify.Watchdog(checks(server, supervisor, recorders, 2 * interval), interval)
    watchdog.start()
    return watchdog


def worker_watch(interval: float | None) -> Callable[[Server], notify.Watchdog] | None:
    """For the API workers (`[http] processes` > 1), which systemd does not watch (it hears
    the first process only): each checks its own HTTP loop and stream hub as the first
    process's watchdog would, and exits when one is stuck, so that the supervisor replaces
    it. `interval` is the first process's (None: no watchdog asked)."""
    if interval is None:
        return None

    def stuck(names: list[str]) -> None:
        log.error("API worker (pid %d): exiting to be replaced (%s stuck)", os.getpid(), names[0])
        os._exit(EXIT_STUCK)  # not SystemExit: the stuck thread would keep it from exiting

    def watch(server: Server) -> notify.Watchdog:
        bound = 2 * interval
        watchdog = notify.Watchdog(
            checks(server, bound=bound), interval, ping=lambda: None, on_stuck=stuck
        )
        watchdog.start()
        return watchdog

    return watch
