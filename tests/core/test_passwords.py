"""Password hashes: argon2id PHC strings; old hashes verify and are upgraded at login."""

import base64
import hashlib
import os

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from pbxcontrol.auth import passwords
from pbxcontrol.auth.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from pbxcontrol.db.models import Person

LIST = "/api/json/calls/active/list/"
CURRENT = "$argon2id$v=19$m=19456,t=2,p=1$"


def scrypt_hash(password: str) -> str:
    """A hash as releases before argon2 stored it."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=64 << 20)
    b64 = base64.b64encode
    return f"scrypt$16384$8$1${b64(salt).decode()}${b64(digest).decode()}"


def weak_argon2_hash(password: str) -> str:
    return PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(password)


def test_hashes_are_argon2id_phc_strings_with_todays_parameters():
    stored = hash_password("s3cret pass")
    assert stored.startswith(CURRENT)
    assert verify_password("s3cret pass", stored)
    assert not verify_password("s3cret pas", stored)
    assert not needs_rehash(stored)
    assert hash_password("s3cret pass") != stored  # salted


@pytest.mark.parametrize("make", [scrypt_hash, weak_argon2_hash])
def test_old_hashes_still_verify_and_need_a_rehash(make):
    stored = make("acme-pass")
    assert verify_password("acme-pass", stored)
    assert not verify_password("acme-pas", stored)
    assert needs_rehash(stored)


@pytest.mark.parametrize("stored", ["", "garbage", "scrypt$1$2", "$argon2id$v=19$m=1$x$y"])
def test_a_malformed_hash_never_verifies(stored):
    assert not verify_password("anything", stored)
    assert needs_rehash(stored)


def test_a_lone_surrogate_hashes_and_verifies():
    assert verify_password("x\udc80", hash_password("x\udc80"))


def set_hash(rt, username: str, stored: str) -> None:
    with rt.sessions.begin() as session:
        session.execute(
            update(Person).where(Person.username == username).values(password_hash=stored)
        )


def get_hash(rt, username: str) -> str:
    with rt.sessions() as session:
        return session.scalar(select(Person.password_hash).where(Person.username == username))


def test_provisioning_stores_argon2id(rt):
    """Provisioning hashes through hash_password (the `rt` fixture provisions the tree)."""
    assert get_hash(rt, "acme").startswith(CURRENT)


@pytest.mark.parametrize("make", [scrypt_hash, weak_argon2_hash])
def test_login_upgrades_an_old_hash(rt, app, make):
    set_hash(rt, "acme", make("acme-pass"))
    resp = app.get(LIST + "?auth_username=acme;auth_password=acme-pass")
    assert resp.json["responses"][0]["code"] == "200"
    upgraded = get_hash(rt, "acme")
    assert upgraded.startswith(CURRENT) and verify_password("acme-pass", upgraded)
    # The upgraded hash logs in too.
    resp = app.get(LIST + "?auth_username=acme;auth_password=acme-pass")
    assert resp.json["responses"][0]["code"] == "200"
    assert get_hash(rt, "acme") == upgraded


def test_a_wrong_password_does_not_upgrade(rt, app):
    old = scrypt_hash("acme-pass")
    set_hash(rt, "acme", old)
    resp = app.get(LIST + "?auth_username=acme;auth_password=wrong")
    assert resp.json["responses"][0]["code"] == "401"
    assert get_hash(rt, "acme") == old


def test_an_unknown_user_is_verified_against_a_dummy_hash_of_todays_cost(app, monkeypatch):
    """No shortcut for unknown usernames: they run argon2id with the parameters every fresh
    hash has, as a known user's wrong password does (timing-safe)."""
    from pbxcontrol.auth import authenticator as auth

    seen = []

    def recording(password, stored):
        seen.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(auth, "verify_password", recording)
    app.get(LIST + "?auth_username=nobody;auth_password=x")
    app.get(LIST + "?auth_username=acme;auth_password=x")
    assert len(seen) == 2
    assert seen[0] == dummy_hash()
    for stored in seen:
        assert stored.startswith(CURRENT) and not passwords.needs_rehash(stored)
