"""Failed-login throttling per username and per client address (a sliding window).

The failures live in the database (table `login_failures`), so every API process of a host,
and every host on one PostgreSQL database, counts the same failures, and a restart does not
forgive them. Usernames and addresses are stored as digests only."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from pbxcontrol.db.models import LoginFailure

log = logging.getLogger("pbxcontrol.http")

_COUNTS = (
    select(LoginFailure.key, func.count())
    .where(
        LoginFailure.key.in_([bindparam("user"), bindparam("addr")]),
        LoginFailure.at > bindparam("since"),
    )
    .group_by(LoginFailure.key)
)
# When `limit` or more failures are in the window, attempts are allowed again once the
# (count - limit + 1)-th newest of them ages out.
_NTH_OLDEST = (
    select(LoginFailure.at)
    .where(LoginFailure.key == bindparam("key"), LoginFailure.at > bindparam("since"))
    .order_by(LoginFailure.at)
    .limit(1)
    .offset(bindparam("skip"))
)


def _digest(kind: str, value: str) -> str:
    return hashlib.blake2b(
        f"{kind}:{value}".encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()


@dataclass(frozen=True)
class Verdict:
    retry_after: int  # seconds until an attempt is allowed; 0 = allowed now
    user_failures: int  # failures of this username in the window (to clear on success)


class LoginThrottle:
    """After `per_user` failures for one username, or `per_address` from one client address,
    within `window` seconds, further attempts are refused until enough failures age out.
    A refused attempt is not checked at all (so a right password does not get through either)
    and is not counted (so a client that keeps knocking is let in once the window passes)."""

    def __init__(
        self,
        engine: Engine,
        per_user: int = 10,
        per_address: int = 50,
        window: float = 300.0,
        clock=time.time,
    ):
        self._engine = engine
        self.limits = {"user": per_user, "addr": per_address}
        self.window = window
        self.clock = clock  # wall-clock seconds: shared by processes and hosts
        self._write_failing = False  # a database that refuses writes is logged once

    def check(self, conn: Connection, username: str, address: str) -> Verdict:
        """Read-only, on the caller's connection (the one the request's auth query uses)."""
        now = self.clock()
        keys = {"user": _digest("user", username), "addr": _digest("addr", address)}
        since = now - self.window
        counts = dict(conn.execute(_COUNTS, {**keys, "since": since}).all())
        wait = 0.0
        for kind, key in keys.items():
            over = counts.get(key, 0) - self.limits[kind]
            if over >= 0:
                oldest = conn.execute(
                    _NTH_OLDEST, {"key": key, "since": since, "skip": over}
                ).scalar()
                if oldest is not None:
                    wait = max(wait, oldest + self.window - now)
        return Verdict(math.ceil(wait), counts.get(keys["user"], 0))

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        self._write(
            (
                insert(LoginFailure),
                [
                    {"key": _digest("user", username), "at": now},
                    {"key": _digest("addr", address), "at": now},
                ],
            ),
            (delete(LoginFailure).where(LoginFailure.at <= now - self.window), None),
        )

    def succeeded(self, username: str) -> None:
        self._write(
            (delete(LoginFailure).where(LoginFailure.key == _digest("user", username)), None)
        )

    def _write(self, *steps: tuple[Any, Any]) -> None:
        """(statement, parameters) pairs, in one transaction."""
        try:
            with self._engine.begin() as conn:
                for statement, parameters in steps:
                    conn.execute(statement, parameters)
        except SQLAlchemyError as exc:  # the answer stands; only the count is lost
            if not self._write_failing:
                log.warning(
                    "login throttle: cannot write to the database: %s", str(exc).splitlines()[0]
                )
            self._write_failing = True
        else:
            if self._write_failing:
                log.warning("login throttle: the database accepts writes again")
            self._write_failing = False
