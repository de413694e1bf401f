"""A database that does not answer (SPEC §12): `api` and `record` start anyway and wait (one
log line per try, the pause growing to 10 s, no password in it), HTTP answers code 503 and
`/health` 503 meanwhile, and within 10 s of the database answering the service serves; the
same when the database goes away later, or freezes (nothing answers, nothing is closed). Exit
status 2 is for configuration errors only.

The database is made unreachable by a TCP proxy in front of PostgreSQL (blocked: connections
closed at once; frozen: held open, nothing forwarded) and, on SQLite, by a directory that is
not there yet (a volume not mounted).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.conftest import LIST, build_provisioned, cli, write_config
from tests.databases import password_url
from tests.e2e.proxy import CuttableProxy
from tests.processes import ADMIN, Service

postgresql_only = pytest.mark.parametrize("database", ["postgresql"], indirect=True)
BACK_WITHIN = 10.0  # seconds from the database answering to the service serving


def until_code(service: Service, code: str, timeout: float) -> float:
    """Seconds until calls/active/list answers `code`."""
    started = time.monotonic()
    while (seen := service.code()) != code:
        assert time.monotonic() - started < timeout, f"still {seen} after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


def errors(stderr: str) -> list[str]:
    """The command's error lines (other lines: warnings, e.g. about a file's mode)."""
    return [line for line in stderr.splitlines() if line.startswith("pbxcontrol: error:")]


class Outage:
    """The database of the engine under test, unreachable until `restore()`."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.url = make_url(db_url)
        self.proxy: CuttableProxy | None = None
        if self.url.get_backend_name() == "postgresql":
            self.proxy = CuttableProxy((self.url.host or "127.0.0.1", self.url.port or 5432))
            self.proxy.blocked.set()
            self.served = password_url(self.url.set(host="127.0.0.1", port=self.proxy.port))
        else:  # a directory not there yet: SQLite cannot open the file (SQLITE_CANTOPEN)
            self.source = Path(self.url.database or "")
            self.mount = tmp_path / "volume" / "db"
            self.served = f"sqlite:///{self.mount / 'pbx.db'}"

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.blocked.clear()
        else:
            self.mount.mkdir(parents=True)
            shutil.copyfile(self.source, self.mount / "pbx.db")

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


def down_config(tmp_path: Path, url: str, body: str = "") -> Path:
    """A config of its own (in down/) naming the database as the service will reach it."""
    (tmp_path / "down").mkdir(exist_ok=True)
    return write_config(tmp_path / "down", body, db=url)


@pytest.fixture
def outage(tmp_path, config_path, db_url):
    build_provisioned(config_path).close()  # the TREE in the database, as provisioned
    down = Outage(tmp_path, db_url)
    try:
        yield down
    finally:
        down.close()


def test_api_starts_without_the_database_answers_503_then_serves(tmp_path, outage):
    """With two API processes: they are forked once the database answers, from a process
    whose waiting server's threads have all ended."""
    config = down_config(tmp_path, outage.served)
    config.write_text(config.read_text().replace("[http]\n", "[http]\nprocesses = 2\n", 1))
    service = Service(config, "api")
    try:
        service.listening()
        body = service.get(f"{LIST}?{ADMIN}").json()
        assert body == {
            "responses": [{"code": "503", "key": "", "message": "The database is unreachable."}]
        }
        stream = service.get(f"/api/stream/calls/active/list/?{ADMIN}").json()
        assert stream["responses"][0]["code"] == "503"
        health = service.get("/health")
        assert health.status_code == 503
        assert health.json()["database"] == "unreachable"
        tries = service.wait_for(r"unreachable \(try 3", timeout=20)
        assert tries
        pauses = [float(p) for p in re.findall(r"next try in ([\d.]+) s", service.log)]
        assert pauses[:3] == [0.5, 1.0, 2.0], pauses  # growing (to 10 s at most)
        assert "pbxtest-secret" not in service.log  # the URL's password is masked
        restored = time.monotonic()
        outage.restore()
        until_code(service, "200", BACK_WITHIN + 5)
        back = time.monotonic() - restored
        print(f"\nSERVICE BACK {back:.2f} s after the database answers")
        assert back <= BACK_WITHIN
        assert service.get("/health").status_code == 200
        service.wait_for(r"API worker 1 started")
        assert {service.code() for _ in range(20)} == {"200"}  # whichever process answers
        assert service.proc.poll() is None
    finally:
        status = service.stop()
    assert status == 0, service.log


def test_record_waits_for_the_database_instead_of_exiting(tmp_path, outage):
    machine = "[asterisk:1]\nari_url = http://127.0.0.1:9/ari\nusername = u\npassword = p\n"
    config = down_config(tmp_path, outage.served, machine)
    service = Service(config, "record")
    try:
        service.wait_for(r"unreachable \(try 2")
        outage.restore()
        service.wait_for(r"database .* answers \(after \d+ tries\)", timeout=BACK_WITHIN + 5)
        assert service.proc.poll() is None
    finally:
        status = service.stop()
    assert status == 0, service.log


@postgresql_only  # an open SQLite file does not go away
def test_a_database_lost_while_serving_answers_503_then_serves_again(tmp_path, outage):
    assert outage.proxy is not None
    outage.restore()
    service = Service(down_config(tmp_path, outage.served), "api")
    try:
        service.listening()
        until_code(service, "200", 30)
        outage.proxy.blocked.set()
        outage.proxy.cut()
        until_code(service, "503", 10)
        assert service.get("/health").status_code == 503
        restored = time.monotonic()
        outage.proxy.blocked.clear()
        until_code(service, "200", BACK_WITHIN + 5)
        assert time.monotonic() - restored <= BACK_WITHIN
    finally:
        status = service.stop()
    assert status == 0, service.log
    assert "Traceback" not in service.log


@postgresql_only  # the statement deadline is PostgreSQL's (SQLite is a local file)
def test_a_frozen_database_answers_503_instead_of_hanging(tmp_path, outage):
    """Frozen: connections stay open and nothing answers (SIGSTOP, a host whose kernel still
    acknowledges). Every request in flight answers 503 within the deadline — statement
    timeout 2 s + 2 s, then a connect timeout of 2 s for a new connection — and none hangs."""
    assert outage.proxy is not None
    outage.restore()
    body = "[database]\nconnect_timeout = 2\nstatement_timeout = 2\n"
    config = down_config(tmp_path, outage.served)
    config.write_text(config.read_text().replace("[database]\n", body, 1))
    service = Service(config, "api")
    try:
        service.listening()
        until_code(service, "200", 30)
        outage.proxy.frozen.set()
        started = time.monotonic()
        answers: list[tuple[str, float]] = []

        def ask() -> None:
            answers.append((service.code(), time.monotonic() - started))

        askers = [threading.Thread(target=ask) for _ in range(6)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(30)
        assert [code for code, _ in answers] == ["503"] * 6, answers
        slowest = max(seconds for _, seconds in answers)
        print(f"\nFROZEN DATABASE: 6 requests answered 503 within {slowest:.2f} s")
        assert slowest <= 2 + 2 + 2 + 2  # deadline, connect timeout, a tick and slack
        outage.proxy.frozen.clear()
        until_code(service, "200", BACK_WITHIN + 5)
    finally:
        status = service.stop()
    assert status == 0, service.log


def test_a_url_that_cannot_name_a_database_exits_2(tmp_path):
    url = "postgresql+psycopg://u:secret@h1:5432,h2:5433/db"  # hosts in the wrong place
    done = cli(write_config(tmp_path, db=url), "api")
    assert done.returncode == 2
    [line] = errors(done.stderr)
    assert line.startswith("pbxcontrol: error: [database] url:")
    assert "host=H1:PORT1&host=H2:PORT2" in line
    assert "secret" not in line


def test_initdb_and_tools_exit_1_while_the_database_is_unreachable(tmp_path, outage):
    config = down_config(tmp_path, outage.served)
    for command in ("initdb", "status"):
        done = cli(config, command)
        assert done.returncode == 1, (command, done.stderr)
        [line] = errors(done.stderr)
        assert "the database is unreachable" in line, line
        assert "pbxtest-secret" not in line


def test_an_older_schema_found_after_waiting_exits_1_so_that_a_restart_runs_initdb(tmp_path):
    """The unit runs `initdb` before `serve` (with `-`): while the database was down it could
    not migrate, so a schema found older once it answers is not a configuration error (2,
    never restarted) but exit 1: systemd restarts, and `initdb` migrates this time."""
    from pbxcontrol.db import migrate
    from pbxcontrol.db.engine import make_engine

    volume = tmp_path / "volume"
    config = down_config(tmp_path, f"sqlite:///{volume / 'pbx.db'}")
    service = Service(config, "api")
    try:
        service.wait_for(r"unreachable \(try 2")
        volume.mkdir()
        engine = make_engine(f"sqlite:///{volume / 'pbx.db'}")
        migrate.upgrade(engine, "0012")
        engine.dispose()
        assert service.proc.wait(30) == 1
    finally:
        service.stop()
    assert "run `pbxcontrol initdb` to upgrade" in service.log.splitlines()[-1]
