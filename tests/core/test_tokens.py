"""Tokens (SPEC §7): user/login, auth_token on every function, expiry, forgery, revocation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from sqlalchemy import delete, event, insert, select, update

from pbxcontrol import provisioning
from pbxcontrol.auth import authenticator as auth
from pbxcontrol.auth import tokens
from pbxcontrol.db.models import LoginFailure, Person
from pbxcontrol.plugin import tables
from tests.conftest import LIST, responses
from tests.core.test_passwords import scrypt_hash

legs = tables.legs

LOGIN = "/api/json/user/login/"
RELOGIN = auth.RELOGIN


def login(app, user: str, password: str | None = None, **extra: str) -> dict:
    params = {"auth_username": user, "auth_password": password or f"{user}-pass", **extra}
    return app.get(LOGIN, params).json


def token_of(app, user: str) -> str:
    return login(app, user, token="1")["data"]["auth_token"]


def listing(app, **params: str) -> dict:
    return app.get(LIST, params).json


def refused(answer: dict) -> bool:
    return answer["responses"] == [{"code": "401", "key": "", "message": RELOGIN}]


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def signer(rt) -> tokens.TokenSigner:
    return rt.api.authenticator.tokens


def provision_person(rt, username: str, **fields) -> None:
    person = {"username": username, "customer": 3, "role": "administrator", **fields}
    with rt.sessions.begin() as session:
        provisioning.apply(session, {"people": [person]})


def test_login_without_token_says_who_and_gives_no_secret(app):
    answer = login(app, "acme")
    assert answer == {
        "responses": [{"code": "200", "key": "", "message": "OK"}],
        "data": {"username": "acme", "customer": 3, "role": "administrator"},
    }
    assert login(app, "acme", token="0")["data"] == answer["data"]


def test_login_with_token_1_issues_a_signed_jwt(rt, app):
    before = int(time.time())
    data = login(app, "acme", token="1")["data"]
    assert set(data) == {"auth_token", "auth_token_expiry", "auth_token_expires"}
    assert data["auth_token_expiry"] == 3600
    assert before + 3600 <= data["auth_token_expires"] <= int(time.time()) + 3600
    assert jwt.get_unverified_header(data["auth_token"])["alg"] == "HS256"
    body = claims(data["auth_token"])
    assert body["sub"] == "acme"
    assert body["exp"] == data["auth_token_expires"]
    assert (body["iss"], body["aud"]) == (tokens.ISSUER, tokens.AUDIENCE)
    assert body["epoch"] and "acme-pass" not in data["auth_token"]


@pytest.mark.parametrize("value", ["2", "yes", "", "01"])
def test_login_token_other_than_0_or_1_is_400(app, value):
    assert responses(app.get(LOGIN, {"auth_username": "acme", "auth_password": "acme-pass",
                                     "token": value})) == [
        {"code": "400", "key": "token", "message": "must be 0 or 1"}
    ]  # fmt: skip


def test_login_with_bad_credentials_is_401(app):
    assert (
        responses(app.get(LOGIN, {"auth_username": "acme", "auth_password": "x"}))[0]["code"]
        == "401"
    )
    assert login(app, "gone")["responses"][0]["code"] == "401"  # disabled
    assert app.get(LOGIN).json["responses"][0]["code"] == "401"


def test_any_privilege_logs_in_but_the_token_keeps_the_role(app):
    token = token_of(app, "panel")  # panel cannot list
    assert listing(app, auth_token=token)["responses"][0]["code"] == "402"
    assert login(app, "wall")["data"]["role"] == "wallboard"


def test_the_list_answers_a_token_as_it_answers_the_password(rt, app):
    rows = [
        dict(machine=1, uniqueid=u, callid=u, channel=f"PJSIP/x-{u}", start=1000 + i, status="Up",
             scustomer=c, dcustomer=c, stype="phone", direction="internal")
        for i, (u, c) in enumerate([("1.1", 3), ("2.1", 4), ("3.1", 7)])
    ]  # fmt: skip
    with rt.engine.begin() as conn:
        conn.execute(insert(legs), rows)
    for user in ("acme", "reseller", "admin"):
        token = token_of(app, user)
        for params in ({}, {"customer": "recursive"}, {"count": "1"}):
            by_password = listing(app, auth_username=user, auth_password=f"{user}-pass", **params)
            assert listing(app, auth_token=token, **params) == by_password
    assert len(listing(app, auth_token=token_of(app, "admin"), customer="system")["data"]) == 3


def test_a_token_and_a_password_together_are_400(app):
    token = token_of(app, "acme")
    both = [{"code": "400", "key": "auth_token", "message": auth.BOTH}]
    assert responses(app.get(LIST, {"auth_token": token, "auth_username": "acme"})) == both
    assert responses(app.get(LIST, {"auth_token": token, "auth_password": "acme-pass"})) == both
    # An empty field is not given (a form with a blank input).
    assert listing(app, auth_token=token, auth_username="", auth_password="")["data"] == []


def test_a_token_renews_itself_as_a_new_token_of_the_same_person(app):
    token = token_of(app, "acme")
    assert app.get(LOGIN, {"auth_token": token}).json["data"]["username"] == "acme"
    fresh = app.get(LOGIN, {"auth_token": token, "token": "1"}).json["data"]["auth_token"]
    assert fresh != token
    assert claims(fresh)["sub"] == "acme" and claims(fresh)["jti"] != claims(token)["jti"]
    assert listing(app, auth_token=fresh)["data"] == []


def test_an_expired_token_is_401(rt, app, monkeypatch):
    monkeypatch.setattr(signer(rt), "clock", lambda: time.time() - 3601)
    old = token_of(app, "acme")
    monkeypatch.setattr(signer(rt), "clock", time.time)
    assert refused(listing(app, auth_token=old))
    monkeypatch.setattr(signer(rt), "lifetime", 1)
    short = token_of(app, "acme")
    assert listing(app, auth_token=short)["data"] == []
    time.sleep(2.1)
    assert refused(listing(app, auth_token=short))


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forgeries(token: str) -> dict[str, str]:
    header, payload, signature = token.split(".")
    body = claims(token)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    as_admin = _b64({**body, "sub": "admin"})
    return {
        "tampered signature": f"{header}.{payload}.{flipped}",
        "tampered payload": f"{header}.{as_admin}.{signature}",
        "wrong key": jwt.encode(body, b"k" * 32, algorithm="HS256"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg none signed": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        "truncated": token[:-6],
        "no signature": f"{header}.{payload}.",
        "two parts": f"{header}.{payload}",
        "malformed": "not-a-token",
        "garbage base64": "eyJ!!!.eyJ.xyz",
        "huge": token + "A" * 5000,
    }


@pytest.mark.parametrize("kind", sorted(forgeries(jwt.encode({"sub": "x"}, b"k" * 32))))
def test_forged_and_malformed_tokens_are_401(app, kind):
    token = token_of(app, "acme")
    assert refused(listing(app, auth_token=forgeries(token)[kind]))
    assert listing(app, auth_token=token)["data"] == []  # the genuine one still works


@pytest.mark.parametrize("claim", ["exp", "epoch", "sub", "aud", "iss", "jti", "scope"])
def test_a_token_signed_with_our_key_but_missing_or_wrong_claims_is_401(rt, app, claim):
    body = claims(token_of(app, "acme"))
    kid = max(signer(rt).keys())
    key, header = signer(rt).keys()[kid], {"kid": str(kid)}

    def signed(payload: dict, algorithm: str = "HS256") -> str:
        return jwt.encode(payload, key, algorithm=algorithm, headers=header)

    assert listing(app, auth_token=signed(body))["data"] == []
    wrong = {k: v for k, v in body.items() if k != claim}
    assert refused(listing(app, auth_token=signed(wrong)))
    if claim in ("aud", "iss", "sub", "jti", "scope"):
        assert refused(listing(app, auth_token=signed({**body, claim: "someone else"})))
    # Same key, another algorithm of the family: only HS256 is accepted.
    assert refused(listing(app, auth_token=signed(body, "HS512")))


@pytest.mark.parametrize("kid", [None, "", "0", "2", "01", "x", 1, "1" * 12, ["1"]])
def test_a_token_naming_no_key_we_have_is_401(rt, app, kid):
    body = claims(token_of(app, "acme"))
    key = signer(rt).keys()[1]
    header = {"alg": "HS256", "typ": "JWT"} if kid is None else {"alg": "HS256", "kid": kid}
    signing_input = f"{_b64(header)}.{_b64(body)}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert refused(listing(app, auth_token=f"{signing_input}.{signature}"))
    if kid == "1":
        assert listing(app, auth_token=f"{signing_input}.{signature}")["data"] == []


def test_a_password_change_revokes_the_persons_tokens_only(rt, app):
    acme, beta = token_of(app, "acme"), token_of(app, "beta")
    provision_person(rt, "acme", password="acme-pass")  # the same password: nothing changes
    assert listing(app, auth_token=acme)["data"] == []
    provision_person(rt, "acme", password="new-pass")
    assert refused(listing(app, auth_token=acme))
    assert listing(app, auth_token=beta)["data"] == []
    fresh = login(app, "acme", "new-pass", token="1")["data"]["auth_token"]
    assert listing(app, auth_token=fresh)["data"] == []


def test_disabling_revokes_and_enabling_again_does_not_revive(rt, app):
    token = token_of(app, "acme")
    provision_person(rt, "acme", enabled=False)
    assert refused(listing(app, auth_token=token))
    provision_person(rt, "acme", enabled=True)
    assert refused(listing(app, auth_token=token))
    assert listing(app, auth_token=token_of(app, "acme"))["data"] == []


def test_a_disabled_flag_set_behind_provisionings_back_still_refuses(rt, app):
    token = token_of(app, "acme")
    with rt.engine.begin() as conn:
        conn.execute(update(Person).where(Person.username == "acme").values(enabled=False))
    assert refused(listing(app, auth_token=token))


def test_a_deleted_and_recreated_person_does_not_revive_old_tokens(rt, app):
    token = token_of(app, "beta")
    with rt.engine.begin() as conn:
        conn.execute(delete(Person).where(Person.username == "beta"))
    assert refused(listing(app, auth_token=token))
    provision_person(rt, "beta", password="beta-pass", customer=4, role="user")
    assert refused(listing(app, auth_token=token))


def test_the_hash_upgrade_at_login_revokes_nothing(rt, app):
    with rt.engine.begin() as conn:
        conn.execute(
            update(Person)
            .where(Person.username == "acme")
            .values(password_hash=scrypt_hash("acme-pass"))
        )
    token = token_of(app, "acme")  # this login upgrades the hash to argon2id
    with rt.engine.connect() as conn:
        stored = conn.execute(select(Person.password_hash).where(Person.username == "acme"))
        assert stored.scalar_one().startswith("$argon2id$")
    assert listing(app, auth_token=token)["data"] == []


def test_the_token_path_runs_no_kdf_and_garbage_no_query(rt, app, monkeypatch):
    token = token_of(app, "acme")

    def no_kdf(*_args):
        raise AssertionError("a KDF ran on the token path")

    monkeypatch.setattr(auth, "verify_password", no_kdf)
    monkeypatch.setattr(auth, "hash_password", no_kdf)
    statements: list[str] = []
    event.listen(rt.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert listing(app, auth_token=token)["data"] == []
    assert any("people" in s for s in statements)
    statements.clear()
    for forged in forgeries(token).values():
        assert refused(listing(app, auth_token=forged))
    assert statements == []  # refused on the signature, before the database


def test_bad_tokens_are_not_password_guesses(rt, app):
    for forged in list(forgeries(token_of(app, "acme")).values()) * 2:
        assert refused(listing(app, auth_token=forged))
    with rt.engine.connect() as conn:
        assert conn.execute(select(LoginFailure)).all() == []
    # And a username locked out by password guesses keeps its valid token working.
    token = token_of(app, "acme")
    for _ in range(10):
        login(app, "acme", "wrong")
    assert "retry in" in login(app, "acme")["responses"][0]["message"]
    assert listing(app, auth_token=token)["data"] == []
