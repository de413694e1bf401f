"""Who is asking: username/password or a token against the people table, and what their role
allows."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, exists, select, update
from sqlalchemy.exc import SQLAlchemyError

from pbxcontrol.auth.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from pbxcontrol.auth.slots import Busy, KdfSlots
from pbxcontrol.auth.throttle import FAILURES, LoginThrottle
from pbxcontrol.auth.tokens import Claims, TokenError, TokenSigner
from pbxcontrol.db.models import Customer, Person, RevokedToken, RolePrivilege
from pbxcontrol.http.envelope import ApiError

log = logging.getLogger(__name__)

# Built once: on the hot path (every API request) building and cache-keying a select costs
# more than SQLite takes to run it. Executed on the Core connection, not through the ORM.
# One connection per request: the throttle's failure counts, then the person, their
# customer's parent and one row per privilege.
_PERSON = (
    select(
        Person.password_hash,
        Person.customer_id,
        Person.role,
        Person.enabled,
        Person.token_epoch,
        Customer.parent_id,
        RolePrivilege.privilege,
    )
    .join(Customer, Customer.id == Person.customer_id)
    .outerjoin(RolePrivilege, RolePrivilege.role == Person.role)
    .where(Person.username == bindparam("username"))
)
# A password login's person with the throttle's failure counts for it: one query.
_LOGIN = _PERSON.add_columns(*FAILURES)
# A token's person, and whether that token was revoked (user/logout): one query.
_TOKEN_PERSON = _PERSON.add_columns(
    exists().where(RevokedToken.jti == bindparam("jti")).label("revoked")
)


def person_rows(conn: Connection, username: str) -> list[Any]:
    """The person `username` (password hash, customer, role, enabled, token epoch, their
    customer's parent), one row per privilege of their role; [] when nobody is called so."""
    return list(conn.execute(_PERSON, {"username": username}).all())


def caller_of(username: str, rows: list[Any], claims: Claims | None = None) -> Caller:
    """The Caller that `person_rows` describes (rows not empty); `claims`: of the token (or
    ticket) the request came with, whose expiry, id and scope the caller keeps."""
    row = rows[0]
    privileges = frozenset(r.privilege for r in rows if r.privilege)
    return Caller(
        username,
        row.customer_id,
        row.role,
        privileges,
        row.parent_id is None,
        claims.expires if claims else None,
        row.token_epoch,
        claims.scope if claims else "all",
        claims.jti if claims else "",
        state=_state(row.password_hash, row.token_epoch),
    )


def _state(password_hash: str, token_epoch: str) -> str:
    """A digest of what the credentials were checked against: a stream compares it with the
    person's row again (Authenticator.revalidate) instead of checking the password again."""
    return hashlib.blake2b(
        f"{password_hash}\0{token_epoch}".encode(), digest_size=16, person=b"pbx-auth-state"
    ).hexdigest()


RELOGIN = "The token is invalid, has expired or was revoked; log in again (user/login)."
BOTH = "give a token or a username and password, not both"
BUSY = "Too many password checks at once; try again in a moment."


@dataclass(frozen=True)
class Caller:
    """An authenticated person, as plugins see them."""

    username: str
    customer_id: int
    role: str
    privileges: frozenset[str]
    is_system_owner: bool  # their customer is the root of the tree
    # Set when the request came with a token: its expiry (Unix time), e.g. to end a stream.
    token_expires: int | None = None
    token_epoch: str = field(default="", repr=False, compare=False)  # to issue a token
    # What the credentials allow: "all" (every privilege above) or "read" (a token of
    # scope=read: only the functions registered as read-only).
    scope: str = "all"
    token_id: str = field(default="", repr=False, compare=False)  # the token's jti, if any
    #: Digest of the password hash and token epoch the credentials were checked against.
    state: str = field(default="", repr=False, compare=False)


class Authenticator:
    """Checks credentials. argon2id costs ~20 ms and 19 MiB by design, so each check takes one
    of the process's `slots` (pbxcontrol.auth.slots: 503 when none frees in time), and a
    successful check is remembered for `cache_seconds` as a MAC (keyed BLAKE2) under a
    per-process key (never the password itself); a changed password hash, role or enabled flag
    is seen on the next request."""

    def __init__(
        self,
        throttle: LoginThrottle,
        cache_seconds: float = 60.0,
        tokens: TokenSigner | None = None,
        *,
        slots: KdfSlots | None = None,
    ):
        self.throttle = throttle
        self.tokens = tokens
        self._cache_seconds = cache_seconds
        self._key = os.urandom(32)
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self.slots = slots or KdfSlots()

    def from_params(self, conn: Connection, values: dict[str, str], address: str = "") -> Caller:
        """The caller of a request whose parameters are `values`, from which the credentials
        are removed: `auth_token`, or `auth_username` and `auth_password` (an empty value
        counts as not given)."""
        username = values.pop("auth_username", None)
        password = values.pop("auth_password", None)
        token = values.pop("auth_token", None)
        if not token:
            return self.authenticate(conn, username, password, address)
        if username or password:
            raise ApiError.invalid("auth_token", BOTH)
        return self.check_token(conn, token)

    def check_token(self, conn: Connection, token: str) -> Caller:
        """The token's person, if the token is valid now. Signature and expiry first (no KDF,
        no database for garbage), then `check_claims`. Not a password guess: the throttle
        neither counts it nor refuses it. Cheap enough to call again and again (a stream)."""
        if self.tokens is None:
            raise ApiError(401, [("", RELOGIN)])
        try:
            claims = self.tokens.verify(token)
        except TokenError:
            raise ApiError(401, [("", RELOGIN)]) from None
        return self.check_claims(conn, claims)

    def check_claims(self, conn: Connection, claims: Claims) -> Caller:
        """The person a token's (or a stream ticket's) claims name, if they still hold: one
        lookup by primary key; disabled, deleted, with a new revocation marker (password
        changed) or the token logged out is a 401. No KDF, no throttle."""
        rows = conn.execute(_TOKEN_PERSON, {"username": claims.username, "jti": claims.jti}).all()
        if (
            not rows
            or not rows[0].enabled
            or rows[0].revoked
            or not hmac.compare_digest(rows[0].token_epoch.encode(), claims.epoch.encode())
        ):
            raise ApiError(401, [("", RELOGIN)])
        return caller_of(claims.username, list(rows), claims)

    def revalidate(
        self, conn: Connection, caller: Caller, token: str | None, claims: Claims | None = None
    ) -> Caller | None:
        """`caller` as they are now, or None if they may no longer act on what they opened
        (a stream): disabled or gone, a new password hash or token epoch, another role or
        customer; with `token` (or a ticket's `claims`), as `check_token` sees it (expired,
        logged out). No KDF and no throttle: the person's row is compared with what the
        credentials were checked against."""
        try:
            if token:
                now = self.check_token(conn, token)
            elif claims is not None:
                now = self.check_claims(conn, claims)
            else:
                rows = person_rows(conn, caller.username)
                if not rows or not rows[0].enabled:
                    return None
                now = caller_of(caller.username, rows)
        except ApiError:
            return None
        same = (now.role, now.customer_id) == (caller.role, caller.customer_id)
        if not same or not hmac.compare_digest(now.state, caller.state):
            return None
        return now

    def authenticate(
        self, conn: Connection, username: str | None, password: str | None, address: str = ""
    ) -> Caller:
        """On the request's connection (the one its API function then uses)."""
        if not username or password is None:
            raise ApiError(401)
        # The person and the throttle's counts in one statement (each one costs a request
        # more than its SQL: issue 21); nobody of that name: the counts alone.
        values = self.throttle.parameters(username, address)
        rows = list(conn.execute(_LOGIN, {**values, "username": username}).all())
        counted = (values, rows[0][-len(FAILURES) :]) if rows else None
        verdict = self.throttle.check(conn, username, address, counted)
        if verdict.retry_after:
            wait = verdict.retry_after
            raise ApiError(
                401,
                [("", f"Too many failed logins; retry in {wait} seconds (retry_after={wait}).")],
            )
        row = rows[0] if rows else None
        tag = self._tag(username, password, row.password_hash if row else "")
        if row is None or not row.enabled or not self._remembered(username, tag):
            if verdict.slow_down:
                time.sleep(verdict.slow_down)  # before the KDF slot: a sleeper holds none
            # An unknown username costs the same check as a wrong password (timing-safe).
            stored = row.password_hash if row else dummy_hash()
            right = self._verify(tag, password, stored, address)
            if row is None or not right or not row.enabled:
                self.throttle.failed(username, address, verdict)
                raise ApiError(401)
            self._remember(username, tag)
        if verdict.pair_failures:
            self.throttle.succeeded(username, address)
        if needs_rehash(row.password_hash):
            self._upgrade_hash(conn, username, password, row.password_hash)
        return caller_of(username, rows)

    def _verify(self, tag: bytes, password: str, stored: str, address: str) -> bool:
        """verify_password in one of the process's KDF slots, once for the same credentials
        asked at the same time; 503 if no slot frees in time."""
        try:
            return self.slots.once(tag, address, lambda: verify_password(password, stored))
        except Busy:
            raise ApiError(503, [("", BUSY)]) from None

    def _upgrade_hash(self, conn: Connection, username: str, password: str, stored: str) -> None:
        """The password just verified against an old hash (scrypt, or argon2 with older
        parameters): store today's hash. In a transaction of its own (the request's may still
        roll back), and only if nobody changed the hash meanwhile. In a KDF slot, when one is
        free at once: else at a later login."""
        if not self.slots.try_held():
            return
        try:
            new_hash = hash_password(password)
        finally:
            self.slots.release()
        upgrade = (
            update(Person)
            .where(Person.username == username, Person.password_hash == stored)
            .values(password_hash=new_hash)
        )
        try:
            with conn.engine.begin() as own:
                own.execute(upgrade)
        except SQLAlchemyError as exc:  # not the message: it would quote both hashes
            log.warning("password hash of %r not upgraded: %s", username, type(exc).__name__)

    def _tag(self, username: str, password: str, stored: str) -> bytes:
        # Keyed BLAKE2 is a MAC in one call (hmac.new builds two hash objects in Python).
        return hashlib.blake2b(
            b"\0".join(
                (username.encode(), password.encode("utf-8", "surrogatepass"), stored.encode())
            ),
            key=self._key,
            digest_size=32,
            person=b"pbx-password-ok",
        ).digest()

    def _remembered(self, username: str, tag: bytes) -> bool:
        """Whether this password verified against this hash within `cache_seconds`."""
        with self._lock:
            cached = self._verified.get(username)
        return bool(cached and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], tag))

    def _remember(self, username: str, tag: bytes) -> None:
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[username] = (tag, time.monotonic() + self._cache_seconds)
