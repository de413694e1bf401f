"""Tokens through their life (SPEC §13): scope, renewal, logout, signing keys with ids,
their rotation without restarts, and the operator's `rotate-token-key`."""

from __future__ import annotations

import threading
import time

import jwt
import pytest
import webtest
from sqlalchemy import func, insert, select

from pbxcontrol import provisioning
from pbxcontrol.auth import keys as keys_mod
from pbxcontrol.auth import login as login_mod
from pbxcontrol.auth import tokens
from pbxcontrol.db.models import RevokedToken, TokenKey
from pbxcontrol.http.api import READ_ONLY
from tests.conftest import LIST, cli, write_config

LOGIN = "/api/json/user/login/"
LOGOUT = "/api/json/user/logout/"
SCOPES = "/api/json/calls/active/scopes/"
HANGUP = "/api/json/calls/hangup/"
TICKET = "/api/json/stream/ticket/"


def answer(app, path: str, **params: str) -> tuple[str, str, dict]:
    """(code, key of the first entry, the envelope)."""
    body = app.get(path, params).json
    return body["responses"][0]["code"], body["responses"][0]["key"], body


def token(app, user: str = "acme", **extra: str) -> str:
    params = {"auth_username": user, "auth_password": f"{user}-pass", "token": "1", **extra}
    return app.get(LOGIN, params).json["data"]["auth_token"]


def claims(value: str) -> dict:
    return jwt.decode(value, options={"verify_signature": False})


# -- scope ---------------------------------------------------------------------------------


def test_a_token_is_scope_all_unless_asked_otherwise(app):
    assert claims(token(app))["scope"] == "all"
    assert claims(token(app, scope="all"))["scope"] == "all"
    assert claims(token(app, scope="read"))["scope"] == "read"


@pytest.mark.parametrize("value", ["", "ALL", "write", "read,all", "rea"])
def test_a_scope_other_than_all_or_read_is_400(app, value):
    code, key, body = answer(
        app, LOGIN, auth_username="acme", auth_password="acme-pass", token="1", scope=value
    )
    assert (code, key) == ("400", "scope"), body


def test_a_read_token_reaches_the_read_only_functions(app):
    read = token(app, scope="read")
    assert answer(app, LIST, auth_token=read)[0] == "200"
    assert answer(app, SCOPES, auth_token=read)[0] == "200"
    assert answer(app, LOGIN, auth_token=read)[2]["data"]["username"] == "acme"
    assert answer(app, TICKET, auth_token=read)[0] == "200"
    assert answer(app, LOGIN, auth_token=read, token="1")[0] == "200"  # renewal
    assert answer(app, LOGOUT, auth_token=read)[0] == "204"


def test_a_read_token_elsewhere_is_402_with_the_reason_and_nothing_runs(rt, app):
    read = token(app, scope="read")
    code, _, body = answer(app, HANGUP, auth_token=read, callid="c1")
    assert (code, body["responses"][0]["message"]) == ("402", READ_ONLY)
    with rt.engine.connect() as conn:  # the hang-up's audit row: the function never ran
        assert conn.execute(select(func.count()).select_from(rt_table(rt))).scalar() == 0
    # The password and a full token reach it (the call does not exist: 404).
    assert answer(app, HANGUP, auth_token=token(app), callid="c1")[0] == "404"
    creds = {"auth_username": "acme", "auth_password": "acme-pass"}
    assert answer(app, HANGUP, callid="c1", **creds)[0] == "404"


def rt_table(rt):
    from pbxcontrol.plugin import tables

    return tables.call_actions


def test_a_read_tokens_role_still_decides_first(app):
    """Scope narrows a person's privileges, never widens them: a panel's read token is 402 on
    the list as its password is."""
    panel = token(app, "panel", scope="read")
    assert answer(app, LIST, auth_token=panel)[0] == "402"


def test_a_plugin_function_is_writable_unless_registered_read(rt, app):
    rt.api.add("test/read", lambda request: "r", ["user"], read=True)
    rt.api.add("test/write", lambda request: "w", ["user"])
    read = token(app, scope="read")
    assert answer(app, "/api/json/test/read/", auth_token=read)[2]["data"] == "r"
    assert answer(app, "/api/json/test/write/", auth_token=read)[0] == "402"
    assert answer(app, "/api/json/test/write/", auth_token=token(app))[2]["data"] == "w"


# -- renewal -------------------------------------------------------------------------------


def test_renewal_keeps_the_scope_or_narrows_it_never_widens(app):
    full, read = token(app), token(app, scope="read")
    assert (
        claims(app.get(LOGIN, {"auth_token": full, "token": "1"}).json["data"]["auth_token"])[
            "scope"
        ]
        == "all"
    )
    narrowed = answer(app, LOGIN, auth_token=full, token="1", scope="read")[2]["data"]
    assert claims(narrowed["auth_token"])["scope"] == "read"
    assert answer(app, HANGUP, auth_token=narrowed["auth_token"], callid="c")[0] == "402"
    code, key, body = answer(app, LOGIN, auth_token=read, token="1", scope="all")
    assert (code, key, body["responses"][0]["message"]) == ("400", "scope", login_mod.NARROWER)


def test_renewal_answers_like_a_login(rt, app):
    first = token(app)
    data = answer(app, LOGIN, auth_token=first, token="1")[2]["data"]
    assert set(data) == {"auth_token", "auth_token_expiry", "auth_token_expires"}
    assert data["auth_token_expiry"] == 3600
    assert claims(data["auth_token"])["exp"] == data["auth_token_expires"]


def test_a_revoked_or_disabled_token_cannot_renew(rt, app):
    gone = token(app)
    assert answer(app, LOGOUT, auth_token=gone)[0] == "204"
    assert answer(app, LOGIN, auth_token=gone, token="1")[0] == "401"
    other = token(app)
    doc = {
        "people": [{"username": "acme", "customer": 3, "role": "administrator", "enabled": False}]
    }
    with rt.sessions.begin() as session:
        provisioning.apply(session, doc)
    assert answer(app, LOGIN, auth_token=other, token="1")[0] == "401"


# -- logout --------------------------------------------------------------------------------


def test_logout_revokes_that_token_and_only_it(app):
    screen, laptop = token(app), token(app)
    code, _, body = answer(app, LOGOUT, auth_token=screen)
    assert body == {"responses": [{"code": "204", "key": "", "message": login_mod.LOGGED_OUT}]}
    for path in (LIST, SCOPES, TICKET, LOGIN, LOGOUT):
        assert answer(app, path, auth_token=screen)[0] == "401", path
    assert answer(app, LIST, auth_token=laptop)[0] == "200"


def test_logout_needs_a_token(app):
    creds = {"auth_username": "acme", "auth_password": "acme-pass"}
    assert answer(app, LOGOUT, **creds)[:2] == ("400", "auth_token")
    assert answer(app, LOGOUT)[0] == "401"


def test_logout_prunes_revocations_of_tokens_that_have_expired(rt, app):
    with rt.engine.begin() as conn:
        conn.execute(insert(RevokedToken), [{"jti": "a" * 32, "expires": int(time.time()) - 1}])
    assert answer(app, LOGOUT, auth_token=token(app))[0] == "204"
    with rt.engine.connect() as conn:
        left = conn.execute(select(RevokedToken.jti)).scalars().all()
    assert len(left) == 1 and left != ["a" * 32]


def test_logouts_of_one_token_at_once_are_all_answered(rt):
    """Concurrent logouts of the same token: each is a 204 or (the token already revoked) a
    401, never a 500 from the duplicate row."""
    apps = [webtest.TestApp(rt.app) for _ in range(6)]
    value = token(apps[0])
    codes: list[str] = []
    barrier = threading.Barrier(len(apps))

    def logout(app):
        barrier.wait()
        codes.append(answer(app, LOGOUT, auth_token=value)[0])

    threads = [threading.Thread(target=logout, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert "204" in codes and set(codes) <= {"204", "401"}, codes


# -- keys ----------------------------------------------------------------------------------


def signer(rt) -> tokens.TokenSigner:
    return rt.api.authenticator.tokens


def test_each_token_names_its_key(app):
    assert jwt.get_unverified_header(token(app))["kid"] == "1"


def test_a_rotation_signs_on_a_running_app_at_the_next_reading(rt, app, monkeypatch):
    before = token(app)
    done = keys_mod.rotate_key(rt.engine, 3600)
    assert (done.new, done.kept, done.dropped) == (2, [1], [])
    assert jwt.get_unverified_header(token(app))["kid"] == "1"  # read 0 s ago
    monkeypatch.setattr(signer(rt), "reread", 0.0)
    after = token(app)
    assert jwt.get_unverified_header(after)["kid"] == "2"
    assert answer(app, LIST, auth_token=before)[0] == "200"
    assert answer(app, LIST, auth_token=after)[0] == "200"


def test_a_token_of_a_key_made_elsewhere_is_verified_at_once(rt, config_path):
    """Another process read the keys after a rotation and signs with the new one: this one
    reads them as soon as such a token comes (its own reading is recent)."""
    from pbxcontrol import config as config_mod
    from pbxcontrol import runtime

    keys_mod.rotate_key(rt.engine, 3600)
    other = runtime.build(config_mod.load(str(config_path)), record=False)
    try:
        fresh = token(webtest.TestApp(other.app))
        assert jwt.get_unverified_header(fresh)["kid"] == "2"
        assert answer(webtest.TestApp(rt.app), LIST, auth_token=fresh)[0] == "200"
    finally:
        other.close()


def test_dropping_old_keys_ends_their_tokens_at_the_next_reading(rt, app, monkeypatch):
    before = token(app)
    done = keys_mod.rotate_key(rt.engine, 3600, drop_all=True)
    assert (done.new, done.kept, done.dropped) == (2, [], [1])
    monkeypatch.setattr(signer(rt), "reread", 0.0)
    assert answer(app, LIST, auth_token=before)[0] == "401"
    assert answer(app, LIST, auth_token=token(app))[0] == "200"


def test_a_key_is_dropped_once_its_successor_outlived_every_token(rt):
    with rt.engine.begin() as conn:  # key 1's successor took over two lifetimes ago
        conn.execute(insert(TokenKey).values(id=2, secret="ab" * 32, created=time.time() - 7200))
    done = keys_mod.rotate_key(rt.engine, 3600)
    assert (done.new, done.kept, done.dropped) == (3, [2], [1])
    with rt.engine.connect() as conn:
        assert sorted(keys_mod.load_keys(conn)) == [2, 3]


def test_unknown_key_ids_read_the_keys_at_most_once_a_second():
    reads: list[float] = []

    def read() -> dict[int, bytes]:
        reads.append(time.monotonic())
        return {1: b"k" * 32}

    signer_ = tokens.TokenSigner(read, 60)
    good, _ = signer_.issue("acme", "e")
    forged = jwt.encode(claims(good), b"k" * 32, algorithm="HS256", headers={"kid": "7"})
    for _ in range(50):
        with pytest.raises(tokens.TokenError):
            signer_.verify(forged)
    assert len(reads) == 2  # at start, then once for the unknown kid
    signer_.verify(good)
    assert len(reads) == 2


def test_a_database_that_cannot_be_read_keeps_the_keys(caplog):
    state = {"fail": False}

    def read() -> dict[int, bytes]:
        if state["fail"]:
            raise OSError("down")
        return {1: b"k" * 32}

    signer_ = tokens.TokenSigner(read, 60, reread=0.0)
    good, _ = signer_.issue("acme", "e")
    state["fail"] = True
    for _ in range(3):
        assert signer_.verify(good).username == "acme"
    assert [r.message for r in caplog.records].count(
        "token keys: cannot read them again: OSError"
    ) == 1


def test_rotate_token_key_on_the_command_line(tmp_path):
    config = write_config(tmp_path)
    assert cli(config, "initdb").returncode == 0
    done = cli(config, "rotate-token-key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "token signing key 2 signs every new token within 5 s",
        "key(s) 1 still verify the tokens they signed until those expire",
    ]
    dropped = cli(config, "rotate-token-key", "--drop-old")
    assert dropped.stdout.splitlines() == [
        "token signing key 3 signs every new token within 5 s",
        "key(s) 1, 2 dropped: the tokens they signed no longer work",
    ]
    assert "rotate-token-key" in cli(config, "--help").stdout


def test_rotate_token_key_without_a_schema_says_so(tmp_path):
    done = cli(write_config(tmp_path), "rotate-token-key")
    assert done.returncode == 2
    assert "pbxcontrol initdb" in done.stderr
