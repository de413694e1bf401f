"""The token signing key: made by initdb, kept in the database, shared by every API process,
never logged; `[http] token_lifetime`."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
import webtest
from sqlalchemy import delete, select, text

from pbxcontrol import config as config_mod
from pbxcontrol import runtime
from pbxcontrol.auth.keys import load_keys
from pbxcontrol.config import ConfigError
from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine
from pbxcontrol.db.models import Person, TokenKey
from tests.conftest import LIST, cli, provision_tree, start_server, write_config

LOGIN = "/api/json/user/login/"


def stored_key(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(TokenKey.secret)).scalar()
    finally:
        engine.dispose()


def test_initdb_makes_a_256_bit_key_once_and_again_when_deleted(tmp_path):
    config = write_config(tmp_path)
    url = f"sqlite:///{tmp_path / 'pbx.db'}"
    assert cli(config, "initdb").returncode == 0
    key = stored_key(url)
    assert key is not None and len(bytes.fromhex(key)) == 32
    again = cli(config, "initdb")
    assert "up to date" in again.stdout and "signing key" not in again.stdout
    assert stored_key(url) == key
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(TokenKey))
    engine.dispose()
    rotated = cli(config, "initdb")
    assert "made a new token signing key" in rotated.stdout, rotated.stdout
    assert stored_key(url) not in (None, key)


def test_an_installation_that_upgrades_gets_a_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, max_calls) VALUES (1, 'c', 0)"))
        conn.execute(
            text("INSERT INTO people (username, password_hash, customer_id, role, enabled) "
                 "VALUES ('old', 'x', 1, 'user', 1)")
        )  # fmt: skip
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert load_keys(conn)
        assert conn.execute(select(Person.token_epoch)).scalar() == ""
    engine.dispose()


def test_an_api_without_a_key_refuses_to_start(tmp_path):
    config = write_config(tmp_path)
    assert cli(config, "initdb").returncode == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    with engine.begin() as conn:
        conn.execute(delete(TokenKey))
    engine.dispose()
    proc = cli(config, "api")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("no token signing key: run `pbxcontrol initdb`")


def test_two_api_apps_on_one_database_accept_each_others_tokens(rt, config_path):
    other = runtime.build(config_mod.load(str(config_path)), record=False)
    try:
        first, second = webtest.TestApp(rt.app), webtest.TestApp(other.app)
        for issuer, verifier in ((first, second), (second, first)):
            login = {"auth_username": "acme", "auth_password": "acme-pass", "token": "1"}
            token = issuer.get(LOGIN, login).json["data"]["auth_token"]
            assert verifier.get(LIST, {"auth_token": token}).json["data"] == []
    finally:
        other.close()


def with_lifetime(tmp_path, value: str):
    """A config with `token_lifetime = value` in [http] (write_config's body is [plugins]')."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("port = 0\n", f"port = 0\ntoken_lifetime = {value}\n"))
    return path


@pytest.mark.parametrize("value", ["0", "-5", "soon", str(31 * 86400)])
def test_a_bad_token_lifetime_names_the_key(tmp_path, value):
    path = with_lifetime(tmp_path, value)
    with pytest.raises(ConfigError) as err:
        config_mod.load(str(path))
    assert "[http] token_lifetime" in str(err.value)


def test_token_lifetime_is_read_from_http_and_defaults_to_an_hour(tmp_path):
    assert config_mod.load(str(write_config(tmp_path))).token_lifetime == 3600
    path = with_lifetime(tmp_path, "600")
    assert config_mod.load(str(path)).token_lifetime == 600
    assert config_mod.check(str(path)) == []


def get(base: str, path: str, **params: str) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}") as resp:
        return json.load(resp)


def test_neither_the_key_nor_a_token_reaches_the_logs(tmp_path):
    config = write_config(tmp_path, "[logging]\nlevel = DEBUG\n")
    made = cli(config, "--log-level", "DEBUG", "initdb")
    provision_tree(config)
    key = stored_key(f"sqlite:///{tmp_path / 'pbx.db'}")
    proc, base, lines = start_server(config, "--log-level", "DEBUG")
    try:
        login = {"auth_username": "acme", "auth_password": "acme-pass", "token": "1"}
        token = get(base, LOGIN, **login)["data"]["auth_token"]
        assert get(base, LIST, auth_token=token)["data"] == []
        assert get(base, LIST, auth_token=token + "x")["responses"][0]["code"] == "401"
    finally:
        proc.terminate()  # one process (no workers): its stderr is read to the end here
        rest = proc.communicate(timeout=30)[1]
    logged = made.stdout + made.stderr + "".join(lines) + rest
    assert "GET /api/json/user/login/ 200" in logged  # the access log ran
    assert key and key not in logged and key.upper() not in logged
    assert token.split(".")[2] not in logged and token[:40] not in logged
