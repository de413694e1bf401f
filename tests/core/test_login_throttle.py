"""Failed logins are throttled per username and per client address, across processes."""

import json
import urllib.request

from sqlalchemy import select

from pbxcontrol.auth.throttle import LoginThrottle
from pbxcontrol.db.models import LoginFailure
from tests.conftest import LIST, cli, provision_tree, start_server, stop_server, write_config


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def retry_after(rt, throttle: LoginThrottle, username: str, address: str) -> int:
    with rt.engine.connect() as conn:
        return throttle.check(conn, username, address).retry_after


def test_throttle_counts_per_user_and_ages_out(rt):
    clock = Clock()
    throttle = LoginThrottle(rt.engine, per_user=3, per_address=100, window=60, clock=clock)
    for _ in range(3):
        assert retry_after(rt, throttle, "acme", "10.0.0.1") == 0
        throttle.failed("acme", "10.0.0.1")
    assert retry_after(rt, throttle, "acme", "10.0.0.2") == 60
    assert retry_after(rt, throttle, "beta", "10.0.0.1") == 0
    clock.now += 30
    assert retry_after(rt, throttle, "acme", "x") == 30
    clock.now += 31
    assert retry_after(rt, throttle, "acme", "x") == 0


def test_throttle_counts_per_address_across_usernames(rt):
    throttle = LoginThrottle(rt.engine, per_user=100, per_address=3, window=60, clock=Clock())
    for name in ("a", "b", "c"):
        throttle.failed(name, "10.0.0.9")
    assert retry_after(rt, throttle, "d", "10.0.0.9") == 60
    assert retry_after(rt, throttle, "d", "10.0.0.8") == 0


def test_success_clears_the_user_count(rt):
    throttle = LoginThrottle(rt.engine, per_user=2, per_address=100, window=60, clock=Clock())
    throttle.failed("acme", "a")
    throttle.succeeded("acme")
    throttle.failed("acme", "a")
    assert retry_after(rt, throttle, "acme", "a") == 0


def test_brute_force_gets_a_401_with_retry_hint_even_for_the_right_password(app, rt):
    rt.api.authenticator.throttle = LoginThrottle(
        rt.engine, per_user=3, per_address=100, window=300
    )
    for _ in range(3):
        resp = app.get(LIST + "?auth_username=acme;auth_password=guess")
        assert resp.json["responses"][0]["message"] == (
            "The authentication details provided are invalid."
        )
    resp = app.get(LIST + "?auth_username=acme;auth_password=acme-pass")
    assert resp.status_int == 200
    entry = resp.json["responses"][0]
    assert entry["code"] == "401"
    assert entry["message"].startswith("Too many failed logins; retry in ")
    assert "data" not in resp.json
    # Other people are not locked out by it.
    ok = app.get(LIST + "?auth_username=beta;auth_password=beta-pass")
    assert ok.json["responses"][0]["code"] == "200"


def test_failures_are_stored_as_digests_and_pruned(rt):
    clock = Clock()
    throttle = LoginThrottle(rt.engine, per_user=5, per_address=5, window=60, clock=clock)
    throttle.failed("acme", "10.1.2.3")
    with rt.engine.connect() as conn:
        rows = conn.execute(select(LoginFailure.key, LoginFailure.at)).all()
    assert len(rows) == 2
    assert not [key for key, _ in rows if "acme" in key or "10.1.2.3" in key]
    clock.now += 61
    throttle.failed("beta", "10.1.2.4")  # the first two have aged out and go
    with rt.engine.connect() as conn:
        assert conn.execute(select(LoginFailure.at)).scalars().all() == [clock.now] * 2


def test_one_count_for_every_api_process(config_path):
    """With `[http] processes = 3`, failures seen by any process lock the name out in all."""
    config = config_path
    config.write_text(
        config.read_text().replace(
            "port = 0\n", "port = 0\nprocesses = 3\nlogin_failures_per_user = 4\n"
        )
    )
    provision_tree(config)
    proc, base, _ = start_server(config)

    def code(password):
        url = f"{base}{LIST}?auth_username=acme;auth_password={password}"
        with urllib.request.urlopen(url, timeout=10) as resp:  # a new connection each time
            entry = json.loads(resp.read())["responses"][0]
        return entry["code"], entry["message"]

    try:
        assert [code("guess")[0] for _ in range(4)] == ["401"] * 4
        # Each of the three processes saw at most some of the four failures; all refuse now.
        for _ in range(12):
            status, message = code("acme-pass")
            assert status == "401" and message.startswith("Too many failed logins"), message
    finally:
        stop_server(proc)


def test_world_readable_config_is_warned_about(tmp_path):
    path = write_config(
        tmp_path,
        "[asterisk:1]\nari_url = http://127.0.0.1:9/ari\nusername = u\npassword = very-secret-pw\n",
    )
    path.chmod(0o644)
    proc = cli(path, "initdb")
    assert "is readable by every user but holds passwords: chmod 0600 it" in proc.stderr
    assert "very-secret-pw" not in proc.stderr
    path.chmod(0o600)
    proc = cli(path, "initdb")
    assert proc.returncode == 0, proc.stderr
    assert "readable by every user" not in proc.stderr


def test_unknown_user_costs_a_password_check_like_a_wrong_password(app, monkeypatch):
    """No shortcut for unknown usernames: both paths run argon2id once (timing-safe)."""
    from pbxcontrol.auth import authenticator as auth

    calls = []
    real = auth.verify_password

    def counting(password, stored):
        calls.append(stored.split("$")[1])
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    app.get(LIST + "?auth_username=nobody;auth_password=x")
    app.get(LIST + "?auth_username=acme;auth_password=x")
    assert calls == ["argon2id", "argon2id"]
