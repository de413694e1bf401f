"""Legs of a machine nobody records (SPEC §12), as the API shows them, on both engines: the
field `recorded` in the list (from memory and by SQL, byte for byte) and the stream (an upsert
per leg when it changes), calls/active/unrecorded, the legs ended after forget_seconds, and
`pbxcontrol forget-machine`."""

from __future__ import annotations

import json
import time

import pytest
import webtest
from sqlalchemy import insert, select, update

from pbxcontrol import config as config_mod
from pbxcontrol import runtime
from pbxcontrol.db import unrecorded
from pbxcontrol.db.clock import db_now
from pbxcontrol.plugin import tables
from tests.conftest import LIST, build_provisioned, cli, write_config
from tests.plugins.active_calls.conftest import CALLS
from tests.plugins.active_calls.stream_support import Client, query, serving, write_legs

TAKEOVER = 2.0  # legs flagged 4 s after their machine's last renewal
MACHINES = unrecorded.MACHINES
UNRECORDED = "/api/json/calls/active/unrecorded/"
ON_2 = sorted(r["uniqueid"] for r in CALLS if r["machine"] == 2)


def renew(rt, machine: int, age: float = 0.0, holder: str = "pbx:1") -> float:
    """Machine `machine`'s lease as its holder left it `age` seconds ago (the database's
    clock); returns that renewal's time."""
    with rt.engine.begin() as conn:
        now = conn.execute(select(db_now(conn.dialect.name))).scalar_one()
        values = {"holder": holder, "renewed_at": now - age}
        done = conn.execute(update(MACHINES).where(MACHINES.c.id == machine).values(values))
        if not done.rowcount:
            conn.execute(insert(MACHINES).values(id=machine, name=f"m{machine}", **values))
    return now - age


@pytest.fixture
def site(database, databases, tmp_path):
    """CALLS live on machines 1 and 2, both renewed just now, served with a watch."""
    with databases.fresh(database, tmp_path) as url:
        config = write_config(tmp_path, db=url)
        rt = build_provisioned(config)
        for machine in (1, 2):
            write_legs(rt, machine, upsert=[r for r in CALLS if r["machine"] == machine])
            renew(rt, machine)
        watch = unrecorded.Watch(TAKEOVER, forget_seconds=3600)
        with serving(rt, watch=watch) as address:
            yield rt, address, webtest.TestApp(rt.app), config
        rt.close()


def listed(app, who: str = "admin", **params: str) -> list[dict]:
    return json.loads(app.get(LIST + "?" + query(who, customer="system", **params)).body)["data"]


def by_sql(tmp_path, url: str):
    """A second API process answering by SQL (no in-memory view, no cache)."""
    (tmp_path / "sql").mkdir()
    body = "[plugin:active_calls]\ncache_megabytes = 0\nmemory_view = no\n"
    config = write_config(tmp_path / "sql", body, db=url)
    return runtime.build(config_mod.load(str(config)), record=False)


def test_a_silent_machines_legs_turn_recorded_0_in_the_stream_and_the_list(site, tmp_path):
    rt, address, app, config = site
    stream = Client(address, query("admin", customer="system", names="1"))
    stream.read_until(lambda c: len(c.rows) == len(CALLS))
    assert {r["recorded"] for r in stream.rows.values()} == {1}
    assert {r["recorded"] for r in listed(app)} == {1}
    renew(rt, 1)
    silent_at = renew(rt, 2, age=2 * TAKEOVER - 0.5) + 2 * TAKEOVER  # 0.5 s from now
    stream.read_until(
        lambda c: sorted(u for (m, u), r in c.rows.items() if r["recorded"] == 0) == ON_2,
        timeout=2 * TAKEOVER,
    )
    with rt.engine.connect() as conn:
        late = conn.execute(select(db_now(conn.dialect.name))).scalar_one() - silent_at
    assert 0 <= late <= 2.0, late  # flagged soon after turning 2 x takeover old (half of it)
    upserts = [d for _, kind, d in stream.events[1:] if kind == "upsert"]
    assert sorted(d["uniqueid"] for d in upserts) == ON_2  # one upsert per leg, machine 2 only
    assert all(d["machine"] == 2 and d["recorded"] == 0 and "snumber_name" in d for d in upserts)
    rows = listed(app, names="1")
    assert {(r["machine"], r["recorded"]) for r in rows} == {(1, 1), (2, 0)}
    twin = by_sql(tmp_path, str(rt.engine.url.render_as_string(hide_password=False)))
    try:
        for params in ({}, {"names": "1"}, {"sort": "machine", "descending": "1"}):
            q = LIST + "?" + query("admin", customer="system", **params)
            assert app.get(q).body == webtest.TestApp(twin.app).get(q).body
    finally:
        twin.close()
    stream.close()


def test_unrecorded_says_since_when_and_is_empty_again_once_the_holder_vouches(site):
    rt, address, app, _ = site
    credentials = {"auth_username": "acme", "auth_password": "acme-pass"}
    assert app.get(UNRECORDED, params=credentials).json["data"] == []
    renew(rt, 1)
    since = renew(rt, 2, age=2 * TAKEOVER + 0.5)
    stream = Client(address, query("admin", customer="system"))
    stream.read_until(lambda c: {r["recorded"] for (m, _), r in c.rows.items() if m == 2} == {0})
    (entry,) = app.get(UNRECORDED, params=credentials).json["data"]
    assert entry == {"machine": 2, "since": pytest.approx(since)}
    # A recorder takes the machine and reconciles: its legs are recorded again.
    with rt.engine.begin() as conn:
        renew(rt, 2)
        unrecorded.vouch(conn, 2)
    stream.read_until(lambda c: {r["recorded"] for r in c.rows.values()} == {1})
    assert app.get(UNRECORDED, params=credentials).json["data"] == []
    assert (
        app.get(UNRECORDED, params={"auth_username": "panel", "auth_password": "panel-pass"}).json[
            "responses"
        ][0]["code"]
        == "402"
    )
    stream.close()


def test_after_forget_seconds_the_stream_removes_the_legs(database, databases, tmp_path):
    with databases.fresh(database, tmp_path) as url:
        rt = build_provisioned(write_config(tmp_path, db=url))
        write_legs(rt, 2, upsert=[r for r in CALLS if r["machine"] == 2])
        renew(rt, 2)
        watch = unrecorded.Watch(takeover=1.0, forget_seconds=4.0)
        with serving(rt, watch=watch) as address:
            stream = Client(address, query("admin", customer="system"))
            stream.read_until(lambda c: len(c.rows) == len(ON_2))
            assert {r["recorded"] for r in stream.rows.values()} == {1}
            stream.read_until(lambda c: not c.rows, timeout=5)
            kinds = [kind for _, kind, _ in stream.events[1:]]
            assert kinds == ["upsert"] * len(ON_2) + ["remove"] * len(ON_2)  # flagged, then ended
            stream.close()
        with rt.engine.connect() as conn:
            assert conn.execute(select(tables.legs.c.uniqueid)).all() == []
        rt.close()


def test_forget_machine_refuses_while_a_recorder_holds_it(site):
    rt, _address, app, config = site
    # Renewed 60 s ahead of the clock: a holder renewing all along, also during the command's
    # start (seconds on a loaded machine, past 2 x takeover_seconds after a renewal 'now').
    renew(rt, 2, age=-60.0, holder="pbx-b:4242")
    done = cli(config, "forget-machine", "2")
    assert done.returncode == 2
    assert "pbx-b:4242" in done.stderr and "machine 2" in done.stderr
    assert {r["machine"] for r in listed(app)} == {1, 2}
    with rt.engine.begin() as conn:  # stopped cleanly: released, nobody holds it
        conn.execute(update(MACHINES).where(MACHINES.c.id == 2).values(holder=""))
    done = cli(config, "forget-machine", "2")
    assert done.returncode == 0, done.stderr
    assert f"ended {len(ON_2)} live legs" in done.stdout
    assert {r["machine"] for r in listed(app)} == {1}
    assert cli(config, "forget-machine", "9").returncode == 2  # no such machine


def test_keepalives_keep_every_stream_within_15_seconds(database, databases, tmp_path):
    """SPEC §8/§12: no stream goes 15 s without a byte. Streams opened at different times,
    nothing changes: the longest gap between two bytes of any stream, over 25 s."""
    with databases.fresh(database, tmp_path) as url:
        rt = build_provisioned(write_config(tmp_path, db=url))
        with serving(rt) as address:
            clients, gaps = [], []
            for _ in range(4):
                clients.append(Client(address, query("acme")))
                time.sleep(1.7)  # between two of the old global ticks
            for client in clients:
                client.sock.setblocking(False)
            last = [time.monotonic()] * len(clients)
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                for i, client in enumerate(clients):
                    try:
                        if client.sock.recv(65536):
                            now = time.monotonic()
                            gaps.append(now - last[i])
                            last[i] = now
                    except BlockingIOError:
                        pass
                time.sleep(0.02)
            now = time.monotonic()
            gaps += [now - at for at in last]
            for client in clients:
                client.close()
        rt.close()
    assert max(gaps) <= 11.0, sorted(gaps)[-4:]
