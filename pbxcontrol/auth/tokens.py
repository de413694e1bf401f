"""Auth tokens (SPEC §7, §13): HS256 JWTs under the installation's keys, which live in the
database (pbxcontrol.auth.keys); each token names its key (`kid`), its scope and its id."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from pbxcontrol.auth.keys import Keys

log = logging.getLogger("pbxcontrol.http")

ISSUER = "pbxcontrol"
AUDIENCE = "pbxcontrol-api"
ALGORITHM = "HS256"
#: `all`: every privilege of the person; `read`: only the functions registered as read-only.
SCOPES = ("all", "read")
# A token we issue is ~300 characters; anything far longer is garbage, refused unparsed.
MAX_LENGTH = 2048
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_KID = re.compile(r"[1-9][0-9]{0,8}")
_JTI = re.compile(r"[0-9a-f]{32}")
_REQUIRED = ["sub", "iat", "exp", "iss", "aud", "epoch", "jti", "scope"]
#: Seconds between readings of the key set (a rotation reaches every process within this).
REREAD = 5.0
#: A token naming a key this process does not know (made by a rotation since its last reading)
#: makes it read the keys at once, at most this often (garbage kids cannot hammer the database).
UNKNOWN_KID_REREAD = 1.0


class TokenError(Exception):
    """Not a valid token of this installation (malformed, forged, expired); no detail given:
    the client's answer is the same in every case, log in again."""


@dataclass(frozen=True)
class Claims:
    """Who a credential checked without a password names: a token's claims, or a stream
    ticket's (pbxcontrol.auth.tickets), re-checked against the person's row."""

    username: str
    epoch: str  # the person's token_epoch when it was issued
    expires: int | None  # Unix time; None: a ticket issued to a password, no token's expiry
    jti: str = ""  # the token's id (for user/logout); "" = not a token's
    scope: str = "all"


def new_epoch() -> str:
    """A fresh revocation marker for a person: storing it revokes their earlier tokens."""
    return secrets.token_hex(8)


class TokenSigner:
    """Issues and verifies tokens. Verification is a signature and a few claim checks: no KDF,
    no database (but for a key id it does not know, at most once a second), so garbage costs
    microseconds. Revocation (the epoch, `enabled`, logout) is checked by the caller against
    the database. The keys come from `read_keys` (the database), read again every REREAD
    seconds: a key added by `rotate-token-key` signs here within that time, no restart."""

    def __init__(
        self,
        read_keys: Callable[[], Keys],
        lifetime: int,
        clock: Callable[[], float] = time.time,
        *,
        reread: float = REREAD,
    ):
        self._read = read_keys
        self._keys = self._checked(read_keys())
        self.lifetime = lifetime
        self.clock = clock
        self.reread = reread
        self._read_at = time.monotonic()
        self._unknown_at = float("-inf")  # the last reading for a key id not known
        self._lock = threading.Lock()
        self._failing = False

    def __repr__(self) -> str:  # never a key
        return f"TokenSigner(lifetime={self.lifetime})"

    @staticmethod
    def _checked(keys: Keys) -> Keys:
        if not keys:
            raise ValueError("no token signing key")
        if any(len(key) < 32 for key in keys.values()):
            raise ValueError("a token signing key has at least 256 bits")
        return keys

    def keys(self) -> Keys:
        """The key set, read again when older than `reread` seconds (by one thread; the
        others go on with the set they have)."""
        if time.monotonic() - self._read_at >= self.reread:
            self._reload(blocking=False)
        return self._keys

    def _key(self, kid: int) -> bytes | None:
        key = self.keys().get(kid)
        now = time.monotonic()
        if key is None and now - self._unknown_at >= UNKNOWN_KID_REREAD:
            # Maybe a key made since the last reading (a token from a process that read the
            # keys after a rotation): read them now, whatever the periodic reading's age.
            self._unknown_at = now
            self._reload(blocking=True)
            key = self._keys.get(kid)
        return key

    def _reload(self, *, blocking: bool) -> None:
        """Read the keys again. A database that cannot be read leaves the set as it was
        (logged once)."""
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            self._keys = self._checked(self._read())
            if self._failing:
                log.warning("token keys: read again")
            self._failing = False
        except Exception as exc:  # noqa: BLE001 - the set in hand still works
            if not self._failing:
                log.warning("token keys: cannot read them again: %s", type(exc).__name__)
            self._failing = True
        finally:
            self._read_at = time.monotonic()
            self._lock.release()

    def issue(self, username: str, epoch: str, scope: str = "all") -> tuple[str, int]:
        """(token, expiry as Unix time), signed with the newest key."""
        keys = self.keys()
        kid = max(keys)
        now = int(self.clock())
        expires = now + self.lifetime
        claims = {
            "sub": username,
            "iat": now,
            "exp": expires,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "epoch": epoch,
            "jti": secrets.token_hex(16),
            "scope": scope,
        }
        token = jwt.encode(claims, keys[kid], algorithm=ALGORITHM, headers={"kid": str(kid)})
        return token, expires

    def verify(self, token: str) -> Claims:
        if len(token) > MAX_LENGTH or not _SHAPE.fullmatch(token):
            raise TokenError("malformed")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise TokenError("header") from None
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise TokenError("kid")
        key = self._key(int(kid))
        if key is None:
            raise TokenError("unknown kid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # never the token's own choice ("none", RS/HS mix-ups)
                audience=AUDIENCE,
                issuer=ISSUER,
                # iat is not checked against the clock: a host a second ahead would reject
                # fresh tokens of another. Expiry is checked, without leeway.
                options={"require": _REQUIRED, "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError(type(exc).__name__) from None
        return _claims(claims)


def _claims(claims: dict) -> Claims:
    sub, epoch, exp = claims["sub"], claims["epoch"], claims["exp"]
    jti, scope = claims["jti"], claims["scope"]
    if not isinstance(sub, str) or not isinstance(epoch, str) or not isinstance(exp, int):
        raise TokenError("claim types")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti) or scope not in SCOPES:
        raise TokenError("jti or scope")
    return Claims(sub, epoch, exp, jti, scope)
