"""Failed-login throttling per username and per client address (a sliding window)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class LoginThrottle:
    """After `per_user` failures for one username, or `per_address` from one client address,
    within `window` seconds, further attempts are refused until the oldest failure ages out.
    A refused attempt is not checked at all, so a right password does not get through either."""

    MAX_KEYS = 100_000

    def __init__(self, per_user: int = 10, per_address: int = 50, window: float = 300.0,
                 clock=time.monotonic):
        self.limits = {"user": per_user, "addr": per_address}
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until an attempt is allowed again; 0 when it is allowed now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in (("user", username), ("addr", address)):
                times = self._failures.get(key)
                if not times:
                    continue
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.limits[key[0]]:
                    wait = max(wait, times[0] + self.window - now)
        return math.ceil(wait)

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:
                self._failures.clear()  # bounded memory under a flood of random names
            for key in (("user", username), ("addr", address)):
                self._failures.setdefault(key, deque(maxlen=self.limits[key[0]])).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("user", username), None)
