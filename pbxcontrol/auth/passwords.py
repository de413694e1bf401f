"""Password hashing with argon2id (PHC strings); older scrypt hashes verify until upgraded."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id minimum (m=19 MiB, t=2, p=1): about 20 ms per hash on the 2-core test host,
# so a login stays well under 100 ms even with the other core busy, and 8 concurrent logins per
# process need 152 MiB, not the 512 MiB of RFC 9106's 64 MiB profile. p=1: with every core
# serving requests, lanes on more threads add latency, not safety. Raising these later is safe:
# needs_rehash() sees older parameters and the next login stores a new hash.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)

# The format of releases before argon2: scrypt$N$r$p$salt$digest (base64).
_LEGACY = "scrypt$"
_LEGACY_MAXMEM = 64 * 1024 * 1024


def _bytes(password: str) -> bytes:
    # surrogatepass: a lone surrogate (from a JSON document or a form) still hashes; it just
    # has to match itself.
    return password.encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    """A PHC string, `$argon2id$v=19$m=19456,t=2,p=1$salt$hash`."""
    return _HASHER.hash(_bytes(password))


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches `stored` (argon2 PHC string or legacy scrypt), in constant
    time; False for a wrong password or a malformed hash."""
    if stored.startswith(_LEGACY):
        return _verify_scrypt(password, stored)
    try:
        return _HASHER.verify(stored, _bytes(password))
    except (VerificationError, InvalidHashError):
        return False


@functools.lru_cache(maxsize=1024)  # a stored hash's parameters never change
def needs_rehash(stored: str) -> bool:
    """True when `stored` is not argon2id with today's parameters: the caller, holding the
    password it just verified, stores hash_password(password) in its place."""
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        _scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            _bytes(password),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_LEGACY_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """A valid hash (today's parameters) of nothing anyone knows: verified against when a
    username is unknown, so an unknown user costs the same time as a wrong password."""
    return hash_password(os.urandom(16).hex())
