"""The process's password-check slots (SPEC §13): argon2id costs ~20 ms of CPU and 19 MiB, so
at most 2 run at once; one client address (an IPv6 /64) runs at most one of them, and only a
few of its attempts may wait: a flood from one host cannot take both slots or every worker
thread, so a right login from elsewhere still finds a slot at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pbxcontrol.auth.throttle import counted_address


class Busy(Exception):
    """No slot in time: the caller answers 503 (try again); not a password verdict."""


class _Running:
    """One check under way: callers with the same key wait for its verdict."""

    __slots__ = ("done", "verdict")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.verdict: bool | None = None


class KdfSlots:
    """`with slots.held(address):` around one password check. Waits at most `wait` seconds
    in all, then raises Busy; an address with `per_address_waiting` attempts already waiting
    behind its running one gets Busy at once (they would only hold worker threads)."""

    def __init__(self, slots: int = 2, wait: float = 1.0, per_address_waiting: int = 2):
        self._slots = threading.BoundedSemaphore(slots)
        self.wait = wait
        self._room = 1 + per_address_waiting
        self._lock = threading.Lock()
        # counted address -> (its one running slot, attempts running or waiting)
        self._addresses: dict[str, tuple[threading.Lock, int]] = {}
        self._running: dict[bytes, _Running] = {}  # checks under way, by the caller's key

    def once(self, key: bytes, address: str, check: Callable[[], bool]) -> bool:
        """`check()` in a slot (`held(address)`); while it runs, a caller with the same `key`
        (the same credentials) waits for its verdict instead of running another: a client's 32
        connections with the same password on a fresh process cost one check, not one each
        (of which the address's limit would have answered all but three with Busy). A waiter
        gets Busy as the runner does, or after `wait` seconds."""
        with self._lock:
            running = self._running.get(key)
            mine = running is None
            if running is None:
                running = self._running[key] = _Running()
        if not mine:
            if running.done.wait(self.wait) and running.verdict is not None:
                return running.verdict
            raise Busy(counted_address(address))
        try:
            with self.held(address):
                running.verdict = check()
            return running.verdict
        finally:
            with self._lock:
                del self._running[key]
            running.done.set()

    @contextmanager
    def held(self, address: str) -> Iterator[None]:
        key = counted_address(address)
        with self._lock:
            own, users = self._addresses.get(key, (threading.Lock(), 0))
            if users >= self._room:
                raise Busy(key)
            self._addresses[key] = (own, users + 1)
        try:
            deadline = time.monotonic() + self.wait
            if not own.acquire(timeout=self.wait):
                raise Busy(key)
            try:
                if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise Busy(key)
                try:
                    yield
                finally:
                    self._slots.release()
            finally:
                own.release()
        finally:
            with self._lock:
                own, users = self._addresses[key]
                if users > 1:
                    self._addresses[key] = (own, users - 1)
                else:
                    del self._addresses[key]

    def try_held(self) -> bool:
        """Take a slot only if one is free now (a hash upgrade, which can wait for the next
        login); release it with `release`."""
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()
