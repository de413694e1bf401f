"""Issue 23's security review, played as an attacker would (SPEC §13), one test per finding of
the throttle, password checks, stream re-checks, methods, operations endpoints, files,
database roles and dependencies. Each failed on the code before the fix (docs/testing.md).

Self-contained on purpose: it runs as it is against an older tree, to show what it finds."""

from __future__ import annotations

import configparser
import logging
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import webtest
from sqlalchemy import create_engine, insert, make_url, text, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from pbxcontrol.auth import authenticator as auth
from pbxcontrol.db.models import LEGS_TABLE as legs
from pbxcontrol.db.models import Person
from tests.conftest import LIST, build_provisioned, start_server, stop_server, write_config
from tests.databases import password_url, sandbox
from tests.fakeari_http import FakeAriHttp
from tests.plugins.active_calls.hangup_support import hold

REPO = Path(__file__).resolve().parents[2]
STREAM = "/api/stream/calls/active/list/"
ATTACKER = "203.0.113.66"
CUSTOMER = "198.51.100.5"


def answer(app, path: str, address: str, **params: str) -> dict:
    query = ";".join(f"{k}={v}" for k, v in params.items())
    return app.get(f"{path}?{query}", extra_environ={"REMOTE_ADDR": address}).json["responses"][0]


def login(app, user: str, password: str, address: str) -> str:
    return answer(app, LIST, address, auth_username=user, auth_password=password)["code"]


class CountingChecks:
    """verify_password, counted (all, at once, on which threads) and `delay`ed."""

    def __init__(self, real, delay: float = 0.0):
        self.real, self.delay = real, delay
        self.calls = 0
        self.running = self.most = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, password: str, stored: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.delay)
            return self.real(password, stored)
        finally:
            with self.lock:
                self.running -= 1


# -- 1. Anyone could lock a customer out --------------------------------------------------


def test_wrong_passwords_from_elsewhere_do_not_lock_the_customer_out(app):
    """Thirty wrong passwords for acme from the attacker's address; acme, from their own
    address, still logs in (before: refused after ten, whoever sent them)."""
    for _ in range(30):
        assert login(app, "acme", "guess", ATTACKER) == "401"
    assert login(app, "acme", "acme-pass", CUSTOMER) == "200"
    refused = answer(app, LIST, ATTACKER, auth_username="acme", auth_password="acme-pass")
    assert refused["code"] == "401" and "retry_after=" in refused["message"]


# -- 2. Password checks were not rationed --------------------------------------------------


def one64(rng: random.Random) -> str:
    return "2001:db8:bad:1:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(4))


def test_random_usernames_from_one_64_cannot_force_unbounded_hashing(app, monkeypatch):
    """Logins with random usernames from random addresses of one IPv6 /64: at most 2 checks
    at once (before: one per worker thread, 19 MiB each), and once the /64 has failed 50
    times it is refused without a check (before: every attempt hashed; the whole /128 was
    the address)."""
    counting = CountingChecks(auth.verify_password, delay=0.2)
    monkeypatch.setattr(auth, "verify_password", counting)
    rng = random.Random(23)

    def attempt():
        user = f"u{rng.getrandbits(40):x}"
        login(app, user, "x", one64(rng))

    burst = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(30)
    assert counting.most <= 2, f"{counting.most} password checks ran at once"
    counting.delay = 0.0
    for _ in range(120):
        attempt()
    assert counting.calls <= 50 + 8, f"{counting.calls} password checks for 128 attempts"


# -- 3. Stream re-checks used the login throttle, and argon2, on the hub thread -------------


def test_failed_re_checks_elsewhere_do_not_cut_password_streams(rt, monkeypatch):
    """Fifty failed re-checks (people disabled in bulk while their streams were open) used
    to lock the throttle's empty address, and every password-authenticated stream was cut at
    its next re-check; a re-check also ran argon2 on the thread that delivers every stream.
    Now a re-check compares the person's row: no throttle, no password check."""
    with rt.engine.connect() as conn:
        stored = text("SELECT password_hash FROM people WHERE username = 'acme'")
        provisioned = conn.execute(stored).scalar_one()
    opened = rt.streams.open(
        "GET", STREAM, "auth_username=acme;auth_password=acme-pass", "", CUSTOMER
    )
    assert not isinstance(opened, bytes), opened
    for i in range(50):
        rt.api.authenticator.throttle.failed(f"disabled{i}", "")
    rt.api.authenticator._cache_seconds = 0  # long after the login: no remembered password
    counting = CountingChecks(auth.verify_password)
    monkeypatch.setattr(auth, "verify_password", counting)
    with rt.engine.connect() as conn:
        assert rt.streams.recheck(conn, opened), "the stream was cut"
    assert counting.calls == 0, "a re-check ran argon2"
    # What must still end it: a new password, the person disabled, another role.
    original = {"password_hash": provisioned, "enabled": True, "role": "administrator"}
    for change in ({"password_hash": "x"}, {"enabled": False}, {"role": "user"}):
        for values, still in ((change, False), (original, True)):
            with rt.engine.begin() as conn:
                conn.execute(update(Person).where(Person.username == "acme").values(**values))
            with rt.engine.connect() as conn:
                assert rt.streams.recheck(conn, opened) is still, values


# -- 4. HEAD ran functions, the hang-up included ------------------------------------------


def test_head_runs_no_function_not_even_a_hangup(tmp_path, db_url):
    ari = FakeAriHttp({"1.1"})
    config = write_config(
        tmp_path,
        f"[asterisk:1]\nari_url = {ari.url}\nusername = u\npassword = p\n"
        "[plugin:active_calls]\nactions_per_minute = 0\n",
        db=db_url,
    )
    rt = build_provisioned(config)
    holder = hold(rt, 1, ari.url)  # the recording process that carries out hang-ups (§11.2)
    try:
        with rt.engine.begin() as conn:
            leg = dict(machine=1, uniqueid="1.1", callid="1.1", channel="PJSIP/alice-1")
            conn.execute(insert(legs).values(**leg, start=1000, status="Up", scustomer=3))
        app = webtest.TestApp(rt.app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        target = "/api/json/calls/hangup/?auth_username=admin;auth_password=admin-pass;uniqueid=1.1"
        for method in ("HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"):
            resp = app.request(target, method=method, expect_errors=True)
            assert ari.deleted == [], f"{method} hung up a call"
            assert resp.status_int == 405 and resp.headers["Allow"] == "GET, POST", method
        assert app.get(target).json["responses"][0]["code"] == "204"  # GET does
        assert ari.deleted == ["1.1"]
    finally:
        holder.stop()
        rt.close()
        ari.close()


# -- 5. /health and /metrics were open to anyone -------------------------------------------


def test_health_and_metrics_refuse_a_client_outside_ops_allow(app):
    for path in ("/health", "/metrics"):
        outside = app.get(path, status="*", extra_environ={"REMOTE_ADDR": ATTACKER})
        assert outside.status_int == 403, (path, outside.text[:200])
        assert outside.json["responses"][0]["code"] == "403"
        inside = app.get(path, status="*", extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        assert inside.status_int in (200, 503)


# -- 6. Lockouts and failed logins were not logged ------------------------------------------


def test_a_lockout_is_one_warning_line_naming_user_and_address(app, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(10):
        login(app, "acme", "guess", ATTACKER)
    failed = [r for r in caplog.records if "login failed" in r.getMessage()]
    assert len(failed) == 10 and all(ATTACKER in r.getMessage() for r in failed)
    locks = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(locks) == 1, locks
    expected = f"login locked: address {ATTACKER}, user 'acme': 10 failed logins in 300 s; "
    assert locks[0].startswith(expected) and re.fullmatch(
        r"retry in \d+ s", locks[0][len(expected) :]
    )


def test_a_client_cannot_forge_a_log_line():
    """A path with a line break in it: one access line, not a forged lock line."""
    from io import StringIO

    from pbxcontrol import logs

    out = StringIO()
    logs.setup("INFO", "text", stream=out)
    try:
        forged = (
            "x\n2026-12-01 10:00:00,000 WARNING pbxcontrol.auth: login locked: address 9.9.9.9, x"
        )
        logging.getLogger("pbxcontrol.access").info("GET /api/json/%s 404", forged)
    finally:
        logging.getLogger().handlers.clear()
    assert len(out.getvalue().splitlines()) == 1, out.getvalue()


# -- 7. A SQLite database created under umask 022 was readable by every local user ---------


def test_the_database_and_its_wal_are_created_private(tmp_path):
    config = write_config(tmp_path, db=f"sqlite:///{tmp_path / 'fresh.db'}")
    done = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "initdb"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    proc, _base, _ = start_server(config)  # WAL and shared memory exist while it runs
    try:
        files = [tmp_path / f"fresh.db{suffix}" for suffix in ("", "-wal", "-shm")]
        modes = {f.name: oct(f.stat().st_mode & 0o777) for f in files if f.exists()}
    finally:
        stop_server(proc)
    assert len(modes) == 3, modes
    assert set(modes.values()) == {"0o600"}, modes


# -- 8. One database role served everything ------------------------------------------------


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_recorder_host_cannot_read_people_hashes_or_token_keys(tmp_path, db_url):
    tag = uuid.uuid4().hex[:8]
    record, api = f"rec_{tag}", f"api_{tag}"
    done = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "grants", "--record", record, "--api", api],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    database = make_url(db_url).database
    superuser = make_url(sandbox("superuser-url").stdout.strip()).set(database=database)
    admin = create_engine(superuser, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    recorder = None
    try:
        with admin.connect() as conn:
            for role in (record, api):
                conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'"))
            conn.exec_driver_sql(done.stdout)
        url = password_url(make_url(db_url).set(username=record, password=f"pw-{record}"))
        recorder = create_engine(url, poolclass=NullPool)
        for table in ("people", "token_keys", "role_privileges"):
            with (
                pytest.raises(ProgrammingError, match="permission denied"),
                recorder.connect() as conn,
            ):
                conn.execute(text(f"SELECT * FROM {table}"))
        with recorder.connect() as conn:  # while what it records stays open to it
            conn.execute(text("SELECT count(*) FROM legs"))
    finally:
        if recorder is not None:
            recorder.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {record}, {api}"))
            conn.execute(text(f"DROP ROLE {record}, {api}"))
        admin.dispose()


# -- 9. setup.cfg allowed releases with known vulnerabilities ------------------------------

#: (package, first release without the advisory): SPEC §13, issue 23's review.
FIXED = {
    "waitress": (3, 0, 1),  # CVE-2024-49768, CVE-2024-49769
    "requests": (2, 32, 4),  # CVE-2024-47081
    "pyjwt": (2, 10, 1),  # CVE-2024-53861
    "orjson": (3, 9, 15),  # CVE-2024-27454
    "bottle": (0, 12, 20),  # CVE-2022-31799
}


def version(text_: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text_)[:3])


def test_no_dependency_floor_allows_a_known_vulnerable_release():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "setup.cfg")
    floors = {}
    for line in cfg["options"]["install_requires"].split("\n"):
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([\d.]+)", line)
        if match:
            floors[match.group(1).lower()] = version(match.group(2))
    for package, fixed in FIXED.items():
        assert floors.get(package, (0,)) >= fixed, f"{package} allows releases before {fixed}"
    pins = {}
    constraints = REPO / "constraints.txt"
    assert constraints.exists(), "nothing pins what was tested"
    for line in constraints.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==([\w.]+)$", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = version(match.group(2))
    for package, floor in floors.items():
        assert pins.get(package.replace("_", "-"), (0,)) >= floor, f"{package} pin below floor"
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
