"""`pbxcontrol grants` (SPEC §13): every table has its place, and on a real PostgreSQL two real
roles work with the SQL it prints: the recorder role records (and cannot read people, password
hashes or token keys), the API role serves."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import webtest
from sqlalchemy import create_engine, make_url, text, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from pbxcontrol.db import journal, migrate
from pbxcontrol.db.engine import make_engine, make_sessionmaker
from pbxcontrol.db.models import Base, Person
from pbxcontrol.ops import grants
from pbxcontrol.recorder import store
from pbxcontrol.recorder.machine import MachineRecorder
from tests.conftest import LIST, TREE, cli, write_config
from tests.core.test_passwords import scrypt_hash
from tests.databases import password_url, sandbox
from tests.fakeari import FakeAri
from tests.recorder.test_reconnect import emit_all, split, wait_until

AUDIT_ROW = (
    "INSERT INTO call_actions (at, username, customer_id, address, action, callid, uniqueid, "
    "machine, code, message, legs) "
    "VALUES (1, 'acme', 3, '192.0.2.1', 'hangup', '', '1.1', 0, 204, '', '[]')"
)
SECRETS = (
    "people",
    "role_privileges",
    "token_keys",
    "revoked_tokens",
    "stream_tickets",
    "login_failures",
)


def test_every_table_is_given_to_a_role_or_kept_by_the_owner():
    """A new table is a decision in pbxcontrol/ops/grants.py, not an accident."""
    tables = set(Base.metadata.tables) | {migrate.FLOOR_TABLE, migrate.VERSION_TABLE}
    assert set(grants.RECORDER) | set(grants.API) | grants.OWNER_ONLY == tables
    assert not set(grants.RECORDER) & set(SECRETS)  # nothing of people, hashes or keys
    assert set(grants.API) <= tables and set(grants.RECORDER) <= tables


def test_the_command_prints_one_transaction_for_both_roles(tmp_path):
    done = cli(tmp_path / "no-config-needed.ini", "grants", "--record", "rec", "--api", 'a"pi')
    assert done.returncode == 0, done.stderr
    sql = done.stdout
    assert sql.count("BEGIN;") == 1 and sql.rstrip().endswith("COMMIT;")
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON "public".legs TO "rec";' in sql
    assert 'GRANT SELECT ON "public".token_keys TO "a""pi";' in sql  # quoted as an identifier
    assert not [line for line in sql.splitlines() if '"rec"' in line and "people" in line]
    same = cli(tmp_path / "x.ini", "grants", "--record", "pbx", "--api", "pbx")
    assert same.returncode == 2 and "the same role" in same.stderr


# -- on PostgreSQL, with real roles ----------------------------------------------------------


@contextmanager
def roles(db_url: str) -> Iterator[tuple[str, str]]:
    """A recorder and an API role (made by the sandbox's superuser) with the printed grants
    applied to the database of `db_url`: (recorder URL, API URL). Dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    record, api = f"rec_{tag}", f"api_{tag}"
    database = make_url(db_url).database
    superuser = make_url(sandbox("superuser-url").stdout.strip()).set(database=database)
    admin = create_engine(superuser, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        for role in (record, api):
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{role}-pw'"))
        conn.exec_driver_sql(grants.grants_sql(record, api))
    base = make_url(db_url)
    urls = tuple(
        password_url(base.set(username=role, password=f"{role}-pw")) for role in (record, api)
    )
    try:
        yield urls[0], urls[1]
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {record}, {api}"))
            conn.execute(text(f"DROP ROLE {record}, {api}"))
        admin.dispose()


def denied(engine, statement: str) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    except ProgrammingError as exc:
        return "permission denied" in str(exc)
    return False


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_recorder_role_records_and_reads_no_secret(db_url):
    owner = make_engine(db_url)
    with make_sessionmaker(owner).begin() as session:
        provisioning.apply(session, json.loads(json.dumps(TREE)))
    with roles(db_url) as (record_url, _api_url):
        engine = make_engine(record_url)
        sessions = make_sessionmaker(engine)
        try:
            # The real write path: a recorder on a fake Asterisk, a call from answer to hangup
            # (legs, history, journal, counters through the triggers, its machine's lease).
            startup, before, after = split("trunk_to_phone_answered", "answered")
            fake = FakeAri(startup)
            recorder = MachineRecorder(1, fake, sessions, heartbeat=0.2)
            recorder.start()
            try:
                assert fake.connected.wait(5), "recorder did not connect"
                wait_until(recorder.synced.is_set, what="first reconcile")
                emit_all(fake, before)
                wait_until(lambda: count(engine, "legs") == 2, what="two live legs")
                emit_all(fake, after)
                wait_until(lambda: count(engine, "legs") == 0, what="legs gone after hangup")
            finally:
                recorder.stop()
            assert count(engine, "leg_history") == 2 and count(engine, "leg_changes") >= 4
            with sessions.begin() as session:  # the sweeps: history and journal retention
                assert store.prune_history(session, 1, time.time() + 1, 100) == 2
                assert journal.prune(session.connection(), time.time() + 1, 1000) >= 4

            def with_db(work, _what):
                with sessions.begin() as session:
                    return work(session)

            with owner.begin() as conn:  # an old audit row, the recorders' to prune
                conn.execute(text(AUDIT_ROW))
            assert store.prune_audit(with_db, time.time(), 100, 1) == 1
            for table in SECRETS:
                assert denied(engine, f"SELECT * FROM {table}"), table
            assert denied(engine, "UPDATE people SET enabled = true")
            assert denied(engine, "INSERT INTO token_keys (id, secret) VALUES (9, 'x')")
        finally:
            engine.dispose()
            owner.dispose()


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_an_api_role_serves_every_function_and_writes_no_legs(tmp_path, db_url):
    owner = make_engine(db_url)
    with make_sessionmaker(owner).begin() as session:
        provisioning.apply(session, json.loads(json.dumps(TREE)))
    with owner.begin() as conn:  # a hash from before argon2: the login upgrades it
        conn.execute(
            update(Person)
            .where(Person.username == "acme")
            .values(password_hash=scrypt_hash("acme-pass"))
        )
    with roles(db_url) as (_record_url, api_url):
        config = config_mod.load(str(write_config(tmp_path, db=api_url)))
        rt = runtime.build(config, record=False)  # reads the token key
        try:
            app = webtest.TestApp(rt.app, extra_environ={"REMOTE_ADDR": "192.0.2.10"})
            wrong = app.get(LIST, {"auth_username": "acme", "auth_password": "guess"})
            assert wrong.json["responses"][0]["code"] == "401"  # the throttle wrote it
            login = app.get(
                "/api/json/user/login/",
                {"auth_username": "acme", "auth_password": "acme-pass", "token": "1"},
            )
            token = login.json["data"]["auth_token"]
            for path in (LIST, "/api/json/calls/active/scopes/"):
                answer = app.get(path, {"auth_token": token}).json
                assert answer["responses"][0]["code"] == "200", (path, answer)
            hangup = app.get(
                "/api/json/calls/hangup/",
                {"auth_username": "admin", "auth_password": "admin-pass", "uniqueid": "9.9"},
            )
            assert hangup.json["responses"][0]["code"] == "404"  # audited all the same
            opened = rt.streams.open(
                "GET", "/api/stream/calls/active/list/", f"auth_token={token}", "", "192.0.2.10"
            )
            assert not isinstance(opened, bytes), opened
            with rt.engine.connect() as conn:
                assert rt.streams.recheck(conn, opened)
                assert conn.execute(text("SELECT count(*) FROM call_actions")).scalar_one() == 1
            assert denied(rt.engine, "INSERT INTO legs (machine, uniqueid) VALUES (1, 'x')")
            assert denied(rt.engine, "DELETE FROM leg_history")
        finally:
            rt.close()
    with owner.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM people WHERE username = 'acme'"))
        assert stored.scalar_one().startswith("$argon2id$")  # the API role upgraded it
    owner.dispose()
