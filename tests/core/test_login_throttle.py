"""Failed logins are throttled per username and per client address, across processes."""

import json
import logging
import time
import urllib.request

from sqlalchemy import event, select

from pbxcontrol.auth.throttle import MAX_SLOW_DOWN, LoginThrottle, counted_address
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


def test_a_username_is_refused_only_at_the_address_that_failed(rt):
    clock = Clock()
    throttle = LoginThrottle(rt.engine, per_user=3, per_address=100, window=60, clock=clock)
    for _ in range(3):
        assert retry_after(rt, throttle, "acme", "10.0.0.1") == 0
        throttle.failed("acme", "10.0.0.1")
    assert retry_after(rt, throttle, "acme", "10.0.0.1") == 60
    assert retry_after(rt, throttle, "acme", "10.0.0.2") == 0  # elsewhere: the customer
    assert retry_after(rt, throttle, "beta", "10.0.0.1") == 0
    clock.now += 30
    assert retry_after(rt, throttle, "acme", "10.0.0.1") == 30
    clock.now += 31
    assert retry_after(rt, throttle, "acme", "10.0.0.1") == 0


def test_throttle_counts_per_address_across_usernames(rt):
    throttle = LoginThrottle(rt.engine, per_user=100, per_address=3, window=60, clock=Clock())
    for name in ("a", "b", "c"):
        throttle.failed(name, "10.0.0.9")
    assert retry_after(rt, throttle, "d", "10.0.0.9") == 60
    assert retry_after(rt, throttle, "d", "10.0.0.8") == 0


def test_an_ipv6_client_counts_by_its_64(rt):
    throttle = LoginThrottle(rt.engine, per_user=2, per_address=3, window=60, clock=Clock())
    assert counted_address("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert counted_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert counted_address("192.0.2.7") == "192.0.2.7"
    throttle.failed("acme", "2001:db8:1:2::1")
    throttle.failed("acme", "2001:db8:1:2:ffff:ffff:ffff:ffff")  # the same /64: the same pair
    assert retry_after(rt, throttle, "acme", "2001:db8:1:2::99") == 60
    assert retry_after(rt, throttle, "acme", "2001:db8:1:3::1") == 0  # the next /64
    throttle.failed("beta", "2001:db8:1:2::7")  # any username: the /64's third failure
    assert retry_after(rt, throttle, "gamma", "2001:db8:1:2:1234::5") == 60
    assert retry_after(rt, throttle, "gamma", "2001:db8:1:3::1") == 0


def test_success_clears_that_address_for_that_username_only(rt):
    throttle = LoginThrottle(rt.engine, per_user=2, per_address=4, window=60, clock=Clock())
    throttle.failed("acme", "a")
    throttle.failed("beta", "a")
    throttle.succeeded("acme", "a")
    throttle.failed("acme", "a")
    assert retry_after(rt, throttle, "acme", "a") == 0
    throttle.failed("gamma", "a")  # the address's 4th (one right login wiped none of them)
    assert retry_after(rt, throttle, "acme", "a") == 60


def test_past_the_ceiling_a_username_is_slowed_never_refused(rt):
    clock = Clock()
    throttle = LoginThrottle(
        rt.engine, per_user=10, per_address=50, window=60, clock=clock, slow_down_after=4
    )
    for i in range(3):
        throttle.failed("acme", f"10.9.0.{i}")
    with rt.engine.connect() as conn:
        assert throttle.check(conn, "acme", "10.8.0.1").slow_down == 0
        throttle.failed("acme", "10.9.0.3")  # the 4th from anywhere
        first = throttle.check(conn, "acme", "10.8.0.1")
        assert first.retry_after == 0 and 0 < first.slow_down < MAX_SLOW_DOWN
        for i in range(4, 40):
            throttle.failed("acme", f"10.9.0.{i}")
        flood = throttle.check(conn, "acme", "10.8.0.1")
        assert flood.retry_after == 0 and flood.slow_down == MAX_SLOW_DOWN == 2.0
        assert throttle.check(conn, "beta", "10.8.0.1").slow_down == 0
    clock.now += 61
    with rt.engine.connect() as conn:
        assert throttle.check(conn, "acme", "10.8.0.1").slow_down == 0


def test_a_slowed_username_still_logs_in_within_the_slow_down(app, rt):
    rt.api.authenticator.throttle = LoginThrottle(
        rt.engine, per_user=10, per_address=50, window=300, slow_down_after=2
    )
    for i in range(2):
        guess = app.get(LIST + "?auth_username=acme;auth_password=guess", extra_environ=at(i))
        assert guess.json["responses"][0]["code"] == "401"
    started = time.monotonic()
    resp = app.get(LIST + "?auth_username=acme;auth_password=acme-pass", extra_environ=at(99))
    took = time.monotonic() - started
    assert resp.json["responses"][0]["code"] == "200"
    assert 0.9 <= took < 2.0, took  # 2 failures past a ceiling of 2: a 1 s slow-down


def at(i: int) -> dict[str, str]:
    return {"REMOTE_ADDR": f"198.51.100.{i}"}


def test_brute_force_locks_that_address_out_and_no_other(app, rt):
    rt.api.authenticator.throttle = LoginThrottle(
        rt.engine, per_user=3, per_address=100, window=300
    )
    for _ in range(3):
        resp = app.get(LIST + "?auth_username=acme;auth_password=guess", extra_environ=at(1))
        assert resp.json["responses"][0]["message"] == (
            "The authentication details provided are invalid."
        )
    resp = app.get(LIST + "?auth_username=acme;auth_password=acme-pass", extra_environ=at(1))
    assert resp.status_int == 200
    entry = resp.json["responses"][0]
    assert entry["code"] == "401"
    assert entry["message"].startswith("Too many failed logins; retry in ")
    wait = int(entry["message"].split("retry_after=")[1].rstrip(")."))
    assert 240 <= wait <= 300  # the first failure's age out (a loaded machine is slow)
    assert "data" not in resp.json
    # The customer, from their own address, is not locked out by it; nor is anyone else.
    ok = app.get(LIST + "?auth_username=acme;auth_password=acme-pass", extra_environ=at(2))
    assert ok.json["responses"][0]["code"] == "200"
    ok = app.get(LIST + "?auth_username=beta;auth_password=beta-pass", extra_environ=at(1))
    assert ok.json["responses"][0]["code"] == "200"


def test_every_failure_and_every_lock_is_one_log_line(rt, caplog):
    throttle = LoginThrottle(rt.engine, per_user=3, per_address=5, window=60, clock=Clock())
    caplog.set_level(logging.INFO, logger="pbxcontrol.auth")

    def fail(user, address):
        with rt.engine.connect() as conn:
            verdict = throttle.check(conn, user, address)
        assert verdict.retry_after == 0
        throttle.failed(user, address, verdict)

    for _ in range(3):
        fail("acme", "192.0.2.1")
    fail("evil\nWARNING forged", "192.0.2.1")
    fail("beta", "192.0.2.1")  # the address's 5th
    fail("acme", "2001:db8::5")
    records = [r for r in caplog.records if r.name == "pbxcontrol.auth"]
    assert [r.levelno for r in records].count(logging.INFO) == 6
    locks = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert locks == [
        "login locked: address 192.0.2.1, user 'acme': 3 failed logins in 60 s; retry in 60 s",
        "login locked: address 192.0.2.1, any user: 5 failed logins in 60 s; retry in 60 s",
    ]
    assert all("\n" not in r.getMessage() for r in records)
    assert "user 'evil\\nWARNING forged'" in records[4].getMessage()


def test_failures_are_stored_as_digests_and_pruned(rt):
    clock = Clock()
    throttle = LoginThrottle(rt.engine, per_user=5, per_address=5, window=60, clock=clock)
    throttle.failed("acme", "10.1.2.3")
    with rt.engine.connect() as conn:
        rows = conn.execute(select(LoginFailure.key, LoginFailure.at)).all()
    assert len(rows) == 3  # (username, address), address, username
    assert not [key for key, _ in rows if "acme" in key or "10.1.2.3" in key]
    clock.now += 61
    throttle.failed("beta", "10.1.2.4")  # the first three have aged out and go
    with rt.engine.connect() as conn:
        assert conn.execute(select(LoginFailure.at)).scalars().all() == [clock.now] * 3
    clock.now += 61
    throttle.succeeded("beta", "10.1.2.5")  # a login prunes too
    with rt.engine.connect() as conn:
        assert conn.execute(select(LoginFailure.at)).scalars().all() == []


def test_one_count_for_every_api_process(config_path):
    """With `[http] processes = 3`, failures seen by any process lock the name out in all
    (for this address)."""
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


def statements_of(rt, run) -> list[str]:
    seen: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        run()
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    return seen


def test_a_password_login_reads_the_person_and_the_counts_in_one_statement(rt):
    """Each statement costs a request more than its SQL (issue 21): a remembered password's
    check is one, the person and the throttle's counts together."""
    auth = rt.api.authenticator

    def login() -> None:
        with rt.engine.begin() as conn:
            assert auth.authenticate(conn, "acme", "acme-pass", "198.51.100.1").username == "acme"

    login()  # the password checked once, then remembered
    statements = statements_of(rt, login)
    assert len(statements) == 1, statements
    assert "login_failures" in statements[0] and "people" in statements[0]


def test_a_remembered_password_is_refused_at_once_when_another_process_locks_it(app, rt):
    """The counts come with the person on every request: failures another API process
    recorded lock this address out of the name at once, a remembered right password too."""
    rt.api.authenticator.throttle = LoginThrottle(rt.engine, per_user=3, per_address=100)
    right = LIST + "?auth_username=acme;auth_password=acme-pass"
    assert app.get(right, extra_environ=at(1)).json["responses"][0]["code"] == "200"
    other = LoginThrottle(rt.engine, per_user=3, per_address=100)  # another process's
    for _ in range(3):
        other.failed("acme", at(1)["REMOTE_ADDR"])
    entry = app.get(right, extra_environ=at(1)).json["responses"][0]
    assert entry["code"] == "401" and entry["message"].startswith("Too many failed logins")
    assert app.get(right, extra_environ=at(2)).json["responses"][0]["code"] == "200"


def test_a_pollers_throttle_keys_are_worked_out_once(rt, monkeypatch):
    """The keys a (username, address) counts under are kept (the address parsed and three
    digests: ~50 µs of every request of a poller, issue 21); the counts are read every time."""
    from pbxcontrol.auth import throttle as throttle_mod

    made: list[str] = []
    digest = throttle_mod._digest
    monkeypatch.setattr(
        throttle_mod, "_digest", lambda kind, value: made.append(kind) or digest(kind, value)
    )
    auth = rt.api.authenticator

    def login() -> None:
        with rt.engine.begin() as conn:
            auth.authenticate(conn, "acme", "acme-pass", "203.0.113.77")

    login()
    made.clear()
    statements = statements_of(rt, login)
    assert made == [] and len(statements) == 1
