"""API worker processes: forked by a single-threaded supervisor, watched, replaced when they die.

With `[http] processes = N` the first process serves HTTP (and records, under `serve`) and a
supervisor process keeps N - 1 workers serving the same socket. The supervisor is forked
before the first process starts any thread and never starts one itself, so it can fork a
replacement at any time (forking a process with threads is unsafe: a lock another thread
held at the fork stays locked in the child). It notices a death at once (SIGCHLD), logs it,
forks a replacement, and backs off when workers die in a tight loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pbxcontrol.http")

BURST, WINDOW = 5, 30.0  # more deaths than BURST within WINDOW seconds: a tight loop
BACKOFF_START, BACKOFF_MAX = 1.0, 60.0
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux), so no worker outlives the service
    (a `kill -9` of the first process would otherwise leave them serving)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"was killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def terminate(pids: list[int], timeout: float) -> None:
    """SIGTERM each of `pids` (children of this process), reap them; SIGKILL what is left
    after `timeout` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(pid, os.WNOHANG)[0] == 0:
                if time.monotonic() >= deadline:
                    log.warning("process %d did not stop in %.0f s: killing it", pid, timeout)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)


class Supervisor:
    """Keeps `count` processes running `serve()` (which returns when SIGTERM/SIGINT stop it)."""

    def __init__(
        self,
        serve: Callable[[], None],
        count: int,
        on_exit: Callable[[int], None] = lambda pid: None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.serve = serve
        self.on_exit = on_exit  # a worker is gone (metrics: mark it dead)
        self.stop_timeout = stop_timeout
        self.workers: dict[int, int] = {}  # pid -> worker number
        self.vacant = list(range(1, count + 1))
        self.deaths: deque[float] = deque()
        self.backoff = 0.0
        self.next_fork = 0.0
        self.stopping = False
        self._wakeup = (-1, -1)

    def run(self) -> int:
        """Until SIGTERM/SIGINT; then stop every worker. Returns the exit status (0)."""
        self._wakeup = os.pipe()
        for fd in self._wakeup:
            os.set_blocking(fd, False)
        # A signal writes a byte to the pipe, so select() below wakes at once on SIGCHLD.
        signal.set_wakeup_fd(self._wakeup[1])
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        while not self.stopping:
            self._reap()
            self._fill()
            wait = max(0.0, min(1.0, self.next_fork - time.monotonic())) if self.vacant else 1.0
            select.select([self._wakeup[0]], [], [], wait)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wakeup[0], 512)
        terminate(list(self.workers), self.stop_timeout)
        for pid in self.workers:
            self.on_exit(pid)
        return 0

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _fill(self) -> None:
        if time.monotonic() < self.next_fork:
            return
        while self.vacant and not self.stopping:
            self._fork(self.vacant.pop(0))

    def _fork(self, number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: none of the supervisor's signal handling
            status = 1
            try:
                signal.set_wakeup_fd(-1)
                for fd in self._wakeup:
                    os.close(fd)
                for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                die_with_parent()
                self.serve()
                status = 0
            except BaseException:
                log.exception("API worker %d failed", number)
            finally:
                os._exit(status)
        self.workers[pid] = number
        log.info("API worker %d started (pid %d)", number, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            number = self.workers.pop(pid, None)
            if number is None:
                continue
            self.on_exit(pid)
            log.error(
                "API worker %d (pid %d) %s; forking a replacement", number, pid, describe(status)
            )
            self.vacant.append(number)
            self._count_death()

    def _count_death(self) -> None:
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - WINDOW:
            self.deaths.popleft()
        if len(self.deaths) <= BURST:
            self.backoff = 0.0
            return
        self.backoff = min(max(self.backoff * 2, BACKOFF_START), BACKOFF_MAX)
        self.next_fork = now + self.backoff
        log.error(
            "API workers are dying in a loop (%d in %.0f s): next fork in %.0f s",
            len(self.deaths),
            WINDOW,
            self.backoff,
        )


class Handle:
    """The first process's view of the supervisor: is it alive, stop it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    def alive(self) -> bool:
        if self.status is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = status
                    log.error(
                        "the API workers' supervisor (pid %d) %s: no worker is replaced any more",
                        self.pid,
                        describe(status),
                    )
        return self.status is None

    def stop(self, timeout: float = 25.0) -> None:
        if self.alive():
            terminate([self.pid], timeout)


def start(supervisor: Supervisor) -> Handle:
    """Fork the supervisor; call before any thread starts. Its workers die with it."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            die_with_parent()
            status = supervisor.run()
        except BaseException:
            log.exception("the API workers' supervisor failed")
        finally:
            os._exit(status)
    return Handle(pid)


def waitress_worker(
    engine: Any, make_server: Callable[[], Any], watch: Callable[[Any], object] | None = None
) -> Callable[[], None]:
    """What a worker runs: its own server on the shared socket, until SIGTERM/SIGINT;
    `watch(server)` starts its own watchdog (pbxcontrol.service.lifecycle.worker_watch)."""

    def serve() -> None:
        engine.dispose(close=False)  # never share the parent's database connections
        server = make_server()
        if watch is not None:
            watch(server)

        def stop(_signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        server.close()

    return serve
