"""Shared fixtures and helpers: a fresh database on each engine (SQLite, PostgreSQL), the
provisioned sandbox tree, the WSGI app, the command line as a subprocess, a served process and
a real Chromium (tests/browser.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from tests.browser import browser, playwright  # noqa: F401 - one Chromium for every tier
from tests.databases import ENGINES, Databases

LIST = "/api/json/calls/active/list/"

TREE = {
    "customers": [
        {"id": 1, "name": "Sandbox Telecom", "parent": None},
        {"id": 2, "name": "Reseller A", "parent": 1},
        {"id": 3, "name": "Acme Ltd", "parent": 2, "max_calls": 2},
        {"id": 4, "name": "Beta GmbH", "parent": 2},
        {"id": 5, "name": "Acme Branch", "parent": 3},
        {"id": 6, "name": "Reseller B", "parent": 1},
        {"id": 7, "name": "Gamma Inc", "parent": 6},
    ],
    "roles": [{"name": "wallboard", "privileges": ["telephone line reports"]}],
    "people": [
        {"username": "admin", "password": "admin-pass", "customer": 1, "role": "system owner"},
        {"username": "reseller", "password": "reseller-pass", "customer": 2, "role": "reseller"},
        {"username": "acme", "password": "acme-pass", "customer": 3, "role": "administrator"},
        {"username": "beta", "password": "beta-pass", "customer": 4, "role": "user"},
        {"username": "gamma", "password": "gamma-pass", "customer": 7, "role": "callshop"},
        {"username": "panel", "password": "panel-pass", "customer": 3, "role": "panel"},
        {"username": "wall", "password": "wall-pass", "customer": 2, "role": "wallboard"},
        {
            "username": "gone",
            "password": "gone-pass",
            "customer": 3,
            "role": "user",
            "enabled": False,
        },
    ],
    "lines": [
        {
            "endpoint": "PJSIP/alice",
            "customer": 3,
            "number": "1001",
            "name": "Alice Smith",
            "callerid_internal": "1001",
            "callerid_external": "0201112222",
            "callername_internal": "Alice",
            "callername_external": "Acme Ltd",
        },
        {
            "endpoint": "PJSIP/bob",
            "customer": 3,
            "number": "1002",
            "name": "Bob Jones",
            "owner": "panel",  # `panel` acts on bob's calls (SPEC §11.1)
        },
        {"endpoint": "PJSIP/carol", "customer": 4, "number": "2001", "name": "Carol White"},
        {"endpoint": "PJSIP/dave", "customer": 4, "number": "2002", "name": "Dave Brown"},
        {"endpoint": "PJSIP/erin", "customer": 7, "number": "3001", "name": "Erin Green"},
    ],
    "peers": [
        {"id": 1, "endpoint": "PJSIP/trunk1", "name": "Carrier A", "ingroup": 10, "outgroup": 20}
    ],
    "numbers": [
        {"number": "0201112222", "customer": 3},
        {"number": "0201113333", "customer": 3},
        {"number": "0202224444", "customer": 4},
    ],
    "directory": [
        {"customer": 3, "number": "0207946000", "name": "Dentist"},
        {"customer": 2, "number": "0207946000", "name": "Reseller's dentist"},
        {"customer": None, "number": "112", "name": "Emergency"},
    ],
}


def write_config(tmp_path: Path, body: str = "", *, db: str | None = None) -> Path:
    db_url = db or f"sqlite:///{tmp_path / 'pbx.db'}"
    text = textwrap.dedent(f"""\
        [database]
        url = {db_url}
        [http]
        host = 127.0.0.1
        port = 0
        [plugins]
        enabled = active_calls
        """) + textwrap.dedent(body)
    path = tmp_path / "pbxcontrol.ini"
    path.write_text(text)
    path.chmod(0o600)  # as documented: the file holds passwords
    return path


@pytest.fixture(scope="session")
def databases(tmp_path_factory) -> Iterator[Databases]:
    """New databases on demand; the PostgreSQL sandbox is started on first use (and stopped at
    the end if this session started it). It is never skipped: if it cannot start, the tests on
    PostgreSQL fail with the script's message."""
    base = tmp_path_factory.getbasetemp()
    run_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    dbs = Databases(tmp_path_factory.mktemp("databases"), run_dir)
    yield dbs
    dbs.close()


@pytest.fixture(scope="module", params=ENGINES)
def database(request) -> str:
    """The SQL engine under test. Every test that uses a database through `db_url` (and so
    `config_path`, `rt`, `app`) or a tier's own database fixture runs on both engines."""
    return request.param


def postgresql_only(reason: str):
    """For a test about PostgreSQL itself (`reason` says why): it runs on PostgreSQL alone."""
    assert reason
    return pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def sqlite_only(reason: str):
    """For a test about SQLite itself (`reason` says why): it runs on SQLite alone."""
    assert reason
    return pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@pytest.fixture
def db_url(database, databases, tmp_path) -> Iterator[str]:
    """A new database of the engine under test with the schema at head (pbx.db in tmp_path on
    SQLite), dropped after the test."""
    with databases.fresh(database, tmp_path) as url:
        yield url


@pytest.fixture
def empty_db_url(database, databases, tmp_path) -> Iterator[str]:
    """A new empty database of the engine under test, for tests of the migrations."""
    with databases.fresh(database, tmp_path, empty=True) as url:
        yield url


@pytest.fixture
def config_path(tmp_path, db_url) -> Path:
    return write_config(tmp_path, db=db_url)


def build_provisioned(config_path: Path) -> runtime.Runtime:
    """The runtime as `pbxcontrol api` builds it, with the TREE provisioned."""
    built = runtime.build(config_mod.load(str(config_path)), record=False)
    with built.sessions.begin() as session:
        provisioning.apply(session, json.loads(json.dumps(TREE)))
    return built


@pytest.fixture
def rt(config_path):
    """The runtime as `pbxcontrol api` builds it, on a fresh database, provisioned."""
    built = build_provisioned(config_path)
    yield built
    built.close()


@pytest.fixture
def app(rt) -> webtest.TestApp:
    return webtest.TestApp(rt.app)


def responses(resp) -> list[dict]:
    return resp.json["responses"]


def cli(
    config: Path, *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """`pbxcontrol --config CONFIG ARGS...` as an operator runs it (`cwd`: a directory whose
    pbxcontrol package is imported first, another release's)."""
    return subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def provision_tree(config: Path) -> None:
    """The TREE through `pbxcontrol provision`."""
    doc = config.parent / "tree.json"
    doc.write_text(json.dumps(TREE))
    done = cli(config, "provision", str(doc))
    assert done.returncode == 0, done.stderr


def start_server(config: Path, *args: str):
    """`pbxcontrol serve` in the background: (process, base URL, stderr lines so far)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), *args, "serve"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        match = re.search(r"listening on (http://[\d.]+:\d+)/api/json/", line)
        if match:
            return proc, match.group(1), lines
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("server did not start:\n" + "".join(lines))


def stop_server(proc) -> None:
    """SIGTERM, as systemd stops it: the first process stops its API workers too. A SIGKILL of
    the first process alone would leave the workers serving."""
    children = children_of(proc.pid) if proc.poll() is None else []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in children:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False
