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
from pbxcontrol.auth.throttle import LoginThrottle
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
    )


RELOGIN = "The token is invalid, has expired or was revoked; log in again (user/login)."
BOTH = "give a token or a username and password, not both"


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


class Authenticator:
    """Checks credentials. argon2id costs ~20 ms by design, so a successful check is remembered
    for `cache_seconds` as an HMAC under a per-process key (never the password itself); a
    changed password hash, role or enabled flag is seen on the next request."""

    def __init__(
        self,
        throttle: LoginThrottle,
        cache_seconds: float = 60.0,
        tokens: TokenSigner | None = None,
    ):
        self.throttle = throttle
        self.tokens = tokens
        self._cache_seconds = cache_seconds
        self._key = os.urandom(32)
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

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

    def authenticate(
        self, conn: Connection, username: str | None, password: str | None, address: str = ""
    ) -> Caller:
        """On the request's connection (the one its API function then uses)."""
        if not username or password is None:
            raise ApiError(401)
        verdict = self.throttle.check(conn, username, address)
        if verdict.retry_after:
            raise ApiError(
                401, [("", f"Too many failed logins; retry in {verdict.retry_after} seconds.")]
            )
        rows = person_rows(conn, username)
        try:
            caller = self._authenticate(username, password, rows)
        except ApiError:
            self.throttle.failed(username, address)
            raise
        if verdict.user_failures:
            self.throttle.succeeded(username)
        if needs_rehash(rows[0].password_hash):
            self._upgrade_hash(conn, username, password, rows[0].password_hash)
        return caller

    def _upgrade_hash(self, conn: Connection, username: str, password: str, stored: str) -> None:
        """The password just verified against an old hash (scrypt, or argon2 with older
        parameters): store today's hash. In a transaction of its own (the request's may still
        roll back), and only if nobody changed the hash meanwhile."""
        upgrade = (
            update(Person)
            .where(Person.username == username, Person.password_hash == stored)
            .values(password_hash=hash_password(password))
        )
        try:
            with conn.engine.begin() as own:
                own.execute(upgrade)
        except SQLAlchemyError as exc:  # not the message: it would quote both hashes
            log.warning("password hash of %r not upgraded: %s", username, type(exc).__name__)

    def _authenticate(self, username: str, password: str, rows) -> Caller:
        if not rows:
            verify_password(password, dummy_hash())
            raise ApiError(401)
        row = rows[0]
        if not self._check(username, password, row.password_hash) or not row.enabled:
            raise ApiError(401)
        return caller_of(username, rows)

    def _check(self, username: str, password: str, stored: str) -> bool:
        tag = hmac.new(
            self._key,
            b"\0".join(
                (username.encode(), password.encode("utf-8", "surrogatepass"), stored.encode())
            ),
            hashlib.sha256,
        ).digest()
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(username)
        if cached and cached[1] > now and hmac.compare_digest(cached[0], tag):
            return True
        if not verify_password(password, stored):
            return False
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[username] = (tag, now + self._cache_seconds)
        return True
