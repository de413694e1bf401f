"""Auth tokens (SPEC §7): HS256 JWTs under the installation's key, which lives in the database."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from pbxcontrol.db.models import TokenKey

ISSUER = "pbxcontrol"
AUDIENCE = "pbxcontrol-api"
ALGORITHM = "HS256"
KEY_ID = 1  # the one row of token_keys
# A token we issue is ~250 characters; anything far longer is garbage, refused unparsed.
MAX_LENGTH = 2048
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_REQUIRED = ["sub", "iat", "exp", "iss", "aud", "epoch"]


class TokenError(Exception):
    """Not a valid token of this installation (malformed, forged, expired); no detail given:
    the client's answer is the same in every case, log in again."""


@dataclass(frozen=True)
class Claims:
    username: str
    epoch: str  # the person's token_epoch when the token was issued
    expires: int  # Unix time


def new_epoch() -> str:
    """A fresh revocation marker for a person: storing it revokes their earlier tokens."""
    return secrets.token_hex(8)


class TokenSigner:
    """Issues and verifies tokens. Verification is a signature and a few claim checks: no KDF,
    no database, so garbage costs microseconds. Revocation (the epoch, `enabled`) is checked by
    the caller against the person's row."""

    def __init__(self, key: bytes, lifetime: int, clock: Callable[[], float] = time.time):
        if len(key) < 32:
            raise ValueError("a token signing key has at least 256 bits")
        self._key = key
        self.lifetime = lifetime
        self.clock = clock

    def __repr__(self) -> str:  # never the key
        return f"TokenSigner(lifetime={self.lifetime})"

    def issue(self, username: str, epoch: str) -> tuple[str, int]:
        """(token, expiry as Unix time)."""
        now = int(self.clock())
        expires = now + self.lifetime
        claims = {
            "sub": username,
            "iat": now,
            "exp": expires,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "epoch": epoch,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> Claims:
        if len(token) > MAX_LENGTH or not _SHAPE.fullmatch(token):
            raise TokenError("malformed")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],  # never the token's own choice ("none", RS/HS mix-ups)
                audience=AUDIENCE,
                issuer=ISSUER,
                # iat is not checked against the clock: a host a second ahead would reject
                # fresh tokens of another. Expiry is checked, without leeway.
                options={"require": _REQUIRED, "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError(type(exc).__name__) from None
        sub, epoch, exp = claims["sub"], claims["epoch"], claims["exp"]
        if not isinstance(sub, str) or not isinstance(epoch, str) or not isinstance(exp, int):
            raise TokenError("claim types")
        return Claims(sub, epoch, exp)


def load_key(conn: Connection) -> bytes | None:
    secret = conn.execute(select(TokenKey.secret).where(TokenKey.id == KEY_ID)).scalar()
    return bytes.fromhex(secret) if secret else None


def ensure_key(engine: Engine) -> bool:
    """Make the signing key (256 random bits) unless there is one; True if made. Safe when
    several processes race: the primary key lets one insert win."""
    with engine.begin() as conn:
        if load_key(conn) is not None:
            return False
    try:
        with engine.begin() as conn:
            conn.execute(insert(TokenKey).values(id=KEY_ID, secret=secrets.token_hex(32)))
    except IntegrityError:
        return False
    return True
