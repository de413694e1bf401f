"""The token signing keys in the database (table `token_keys`): read, made, rotated, pruned.

Every API process and host reads the same keys, so each verifies the tokens any of them
issued. The newest key (highest id) signs; a token names its key by id (`kid`), so the keys
before it keep verifying the tokens they signed until those expire.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from pbxcontrol.db.models import TokenKey

FIRST_ID = 1  # the key initdb makes (and migration 0008 made)
#: How long after its successor takes over a key is kept, beyond the token lifetime: other
#: processes start signing with the successor only when they next read the keys.
OVERLAP = 60.0

Keys = dict[int, bytes]  # key id -> secret


def load_keys(conn: Connection) -> Keys:
    """Every key, by id."""
    return {
        row.id: bytes.fromhex(row.secret)
        for row in conn.execute(select(TokenKey.id, TokenKey.secret))
    }


def key_reader(engine: Engine) -> Callable[[], Keys]:
    """A function that reads the keys on a connection of its own (for TokenSigner)."""

    def read() -> Keys:
        with engine.connect() as conn:
            return load_keys(conn)

    return read


def ensure_key(engine: Engine) -> bool:
    """Make the first signing key (256 random bits) unless there is a key; True if made. Safe
    when several processes race: the primary key lets one insert win."""
    with engine.begin() as conn:
        if load_keys(conn):
            return False
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(TokenKey).values(id=FIRST_ID, secret=_secret(), created=time.time())
            )
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class Rotation:
    new: int  # the id of the key that signs from now on
    kept: list[int]  # older keys still verifying their tokens
    dropped: list[int]  # keys deleted: their tokens no longer verify


def rotate_key(engine: Engine, lifetime: float, *, drop_all: bool = False) -> Rotation:
    """Add a key that signs from now on. Older keys stay while a token they signed may still
    be valid (their successor took over less than `lifetime` + OVERLAP seconds ago), or none
    of them with `drop_all` (a leaked key: every token issued so far stops working)."""
    now = time.time()
    with engine.begin() as conn:
        newest = conn.execute(select(func.max(TokenKey.id))).scalar() or 0
        conn.execute(insert(TokenKey).values(id=newest + 1, secret=_secret(), created=now))
        rows = conn.execute(select(TokenKey.id, TokenKey.created).order_by(TokenKey.id)).all()
        dropped = [
            key.id
            for key, successor in zip(rows, rows[1:], strict=False)
            if drop_all or (successor.created or 0) < now - lifetime - OVERLAP
        ]
        if dropped:
            conn.execute(delete(TokenKey).where(TokenKey.id.in_(dropped)))
    kept = [row.id for row in rows if row.id not in dropped and row.id != newest + 1]
    return Rotation(newest + 1, kept, dropped)


def _secret() -> str:
    return secrets.token_hex(32)
