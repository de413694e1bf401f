"""Failed-login throttling per (username, client address) and per client address, in a sliding
window; past a ceiling of failures for one username from everywhere, a slow-down (SPEC §13).

Guessing cannot lock a person out: a lock holds one username at one address, or one address
for every username, so the right password from an address without recent failures always
works. An IPv6 client counts by its /64 (one host has billions of addresses).

The failures live in the database (table `login_failures`), so every API process of a host,
and every host on one PostgreSQL database, counts the same failures, and a restart does not
forgive them. Usernames and addresses are stored as digests only; rows leave once they no
longer count (older than the window, or of a (username, address) that logged in)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from pbxcontrol.db.models import LoginFailure

log = logging.getLogger("pbxcontrol.http")
#: Failed logins (INFO) and locks (WARNING), one line each, for fail2ban or a SIEM
#: (etc/fail2ban/filter.d/pbxcontrol.conf reads the locks).
audit = logging.getLogger("pbxcontrol.auth")

_COUNTS = (
    select(LoginFailure.key, func.count())
    .where(
        LoginFailure.key.in_([bindparam("pair"), bindparam("addr"), bindparam("user")]),
        LoginFailure.at > bindparam("since"),
    )
    .group_by(LoginFailure.key)
)
#: The failures in the window under each key, as columns another statement can carry: the
#: authenticator's person lookup does, so a password login reads both in one statement.
FAILURES = tuple(
    select(func.count())
    .where(LoginFailure.key == bindparam(kind), LoginFailure.at > bindparam("since"))
    .scalar_subquery()
    .label(f"failures_{kind}")
    for kind in ("pair", "addr", "user")
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
#: The longest slow-down past the per-username ceiling (SPEC §13: at most 2 s).
MAX_SLOW_DOWN = 2.0


def _digest(kind: str, value: str) -> str:
    return hashlib.blake2b(
        f"{kind}:{value}".encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()


@functools.lru_cache(maxsize=4096)
def _keys_of(username: str, address: str) -> tuple[str, str, str]:
    """The keys a (username, address) counts under: the pair's, the address's, the name's.
    Kept for the clients seen last: a poller's every request needs them, and working them
    out (the address parsed, three digests) took ~50 µs of a 2 ms answer (issue 21)."""
    counted = counted_address(address)
    return (
        _digest("pair", f"{username}\0{counted}"),
        _digest("addr", counted),
        _digest("user", username),
    )


def counted_address(address: str) -> str:
    """What failures from `address` are counted under: an IPv4 address itself (an IPv4-mapped
    IPv6 address as its IPv4), an IPv6 address by its /64; anything else as it is."""
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def shown(username: str) -> str:
    """A username as a log line shows it: quoted, control characters escaped (no forged
    lines), at most 64 characters."""
    return repr(username[:64])


@dataclass(frozen=True)
class Verdict:
    retry_after: int  # seconds until this username may try from this address; 0 = now
    slow_down: float  # seconds to wait before the password check (the username's ceiling)
    pair_failures: int  # of this username from this address (cleared on success)
    address_failures: int  # from this address (its /64), any username


class LoginThrottle:
    """After `per_user` failures for one username from one address, that address is refused
    for that username; after `per_address` from one address (any usernames), that address is
    refused altogether; both within `window` seconds, until enough failures age out. A refused
    attempt is not checked at all (so a right password does not get through either) and is not
    counted (so a client that keeps knocking is let in once the window passes). Past
    `slow_down_after` failures for one username from all addresses, its password checks wait
    (growing to MAX_SLOW_DOWN): a slow-down, never a refusal."""

    def __init__(
        self,
        engine: Engine,
        per_user: int = 10,
        per_address: int = 50,
        window: float = 300.0,
        clock=time.time,
        slow_down_after: int = 100,
    ):
        self._engine = engine
        self.limits = {"pair": per_user, "addr": per_address}
        self.slow_down_after = slow_down_after
        self.window = window
        self.clock = clock  # wall-clock seconds: shared by processes and hosts
        self._write_failing = False  # a database that refuses writes is logged once

    @staticmethod
    def _keys(username: str, address: str) -> dict[str, str]:
        return dict(zip(("pair", "addr", "user"), _keys_of(username, address), strict=True))

    def parameters(self, username: str, address: str) -> dict[str, Any]:
        """The values of FAILURES' parameters now: pass them with the counts to `check`."""
        return {**self._keys(username, address), "since": self.clock() - self.window}

    def check(
        self,
        conn: Connection,
        username: str,
        address: str,
        counted: tuple[dict[str, Any], Sequence[int]] | None = None,
    ) -> Verdict:
        """Read-only, on the caller's connection (the one the request's auth query uses).
        `counted`: FAILURES' (parameters, values) as a statement of the caller's read them."""
        if counted is None:
            values = self.parameters(username, address)
            found = dict(conn.execute(_COUNTS, values).all())
            counts = {kind: found.get(values[kind], 0) for kind in ("pair", "addr", "user")}
        else:
            values = counted[0]
            counts = dict(zip(("pair", "addr", "user"), counted[1], strict=True))
        since = values["since"]
        now = since + self.window
        wait = 0.0
        for kind, limit in self.limits.items():
            over = counts[kind] - limit
            if over >= 0:
                oldest = conn.execute(
                    _NTH_OLDEST, {"key": values[kind], "since": since, "skip": over}
                ).scalar()
                if oldest is not None:
                    wait = max(wait, oldest + self.window - now)
        # Linear from the ceiling: MAX_SLOW_DOWN once the failures reach twice the ceiling.
        over_ceiling = counts["user"] - self.slow_down_after + 1
        slow = min(MAX_SLOW_DOWN, MAX_SLOW_DOWN * over_ceiling / self.slow_down_after)
        return Verdict(math.ceil(wait), max(0.0, slow), counts["pair"], counts["addr"])

    def failed(self, username: str, address: str, before: Verdict | None = None) -> None:
        """Count a failure (an INFO line), and log at WARNING the lock it completes: `before`
        is the verdict the attempt passed. The count is read again after the commit, so of
        two failures racing to the limit, the later one sees both."""
        now = self.clock()
        keys = self._keys(username, address)
        audit.info("login failed: address %s, user %s", address, shown(username))
        done = self._write(
            (insert(LoginFailure), [{"key": key, "at": now} for key in keys.values()]),
            (delete(LoginFailure).where(LoginFailure.at <= now - self.window), None),
        )
        if not done:
            return
        try:
            with self._engine.connect() as conn:
                after = self.check(conn, username, address)
        except SQLAlchemyError:
            return
        self._log_locks(username, address, before, after)

    def _log_locks(
        self, username: str, address: str, before: Verdict | None, after: Verdict
    ) -> None:
        counted = counted_address(address)
        network = f", counted as {counted}" if counted != address else ""
        span = f"in {self.window:g} s; retry in {after.retry_after} s"
        was = before or Verdict(0, 0.0, 0, 0)
        if was.address_failures < self.limits["addr"] <= after.address_failures:
            audit.warning(
                "login locked: address %s%s, any user: %d failed logins %s",
                address,
                network,
                after.address_failures,
                span,
            )
        elif was.pair_failures < self.limits["pair"] <= after.pair_failures:
            audit.warning(
                "login locked: address %s%s, user %s: %d failed logins %s",
                address,
                network,
                shown(username),
                after.pair_failures,
                span,
            )

    def succeeded(self, username: str, address: str) -> None:
        """The right password from `address`: its failures for `username` no longer count
        (the address's own count and the username's ceiling stay: one right password must
        not wipe out the traces of guessing from elsewhere)."""
        pair = self._keys(username, address)["pair"]
        self._write(
            (delete(LoginFailure).where(LoginFailure.key == pair), None),
            (delete(LoginFailure).where(LoginFailure.at <= self.clock() - self.window), None),
        )

    def _write(self, *steps: tuple[Any, Any]) -> bool:
        """(statement, parameters) pairs, in one transaction; False if it failed."""
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
            return False
        if self._write_failing:
            log.warning("login throttle: the database accepts writes again")
        self._write_failing = False
        return True
