"""The list's `monitor` field (SPEC §11.8): the strongest live session on a leg, shown only to a
viewer who holds `monitor` over the leg's owning customer, or to everyone who sees the leg when
that customer's policy has `monitor_announce=1`; `""` to everyone else — whatever the API keeps
in memory (the live view, its ordered blocks, answers cached per data version, streams shared
per view key) and whoever asked first. Both engines; the list through the in-memory view and
through its SQL (a past moment, PostgreSQL's case-insensitive filters), and the stream."""

from __future__ import annotations

from typing import Any

import pytest

from pbxcontrol import provisioning
from pbxcontrol.plugin import tables
from tests.conftest import LIST, build_provisioned, write_config
from tests.plugins.active_calls.conftest import CALLS
from tests.plugins.active_calls.stream_support import Client, query, serving, write_legs

legs = tables.legs
#: Acme's alice (100.1, line PJSIP/alice of Acme): the monitored leg.
WATCHED = (1, "100.1")
#: People of Acme (customer 3): `acme` (administrator, no `monitor`) and `coach`, whose role
#: holds `monitor`; the system owner `admin` holds it over everyone; `reseller` (Acme's
#: parent) does not hold it.
SUPERVISORS = {
    "roles": [{"name": "coaches", "privileges": ["user", "monitor"]}],
    "people": [{"username": "coach", "password": "coach-pass", "customer": 3, "role": "coaches"}],
}


@pytest.fixture
def rt(tmp_path, db_url):
    runtime = build_provisioned(write_config(tmp_path, "", db=db_url))
    with runtime.sessions.begin() as session:
        provisioning.apply(session, SUPERVISORS)
    write_legs(runtime, 1, upsert=[r for r in CALLS if r["machine"] == 1])
    yield runtime
    runtime.close()


def monitored(rt, mode: str) -> None:
    """The recorder's write of the watched leg with `mode` (journal entry included)."""
    with rt.engine.connect() as conn:
        row = conn.execute(
            legs.select().where(legs.c.machine == 1, legs.c.uniqueid == WATCHED[1])
        ).one()
    fields = {k: v for k, v in row._mapping.items() if k in tables.leg_fields or k == "endpoint"}
    write_legs(rt, 1, update=[dict(fields, monitor=mode)])


def announce(rt, value: int) -> None:
    with rt.sessions.begin() as session:
        provisioning.apply(
            session,
            {"customers": [{"id": 3, "name": "Acme Ltd", "parent": 2, "monitor_announce": value}]},
        )


def modes(app, who: str, **params: str) -> dict[tuple[int, str], str]:
    pairs = {"auth_username": who, "auth_password": f"{who}-pass", **params}
    body = app.get(LIST, pairs).json
    assert body["responses"][0]["code"] == "200", body
    return {(r["machine"], r["uniqueid"]): r["monitor"] for r in body["data"]}


def shown(found: dict[tuple[int, str], str]) -> dict[tuple[int, str], str]:
    return {key: mode for key, mode in found.items() if mode}


ASKS: list[tuple[str, dict[str, Any]]] = [
    ("acme", {}),
    ("coach", {}),
    ("admin", {"customer": "system"}),
    ("admin", {}),
    ("reseller", {"recursive": "1"}),
    ("acme", {"dnumber": "100", "dmatch": "contains"}),  # SQL on PostgreSQL
    ("coach", {"dnumber": "100", "dmatch": "contains"}),
]
#: Who sees the watched leg at all (the others' answers must hold no mode either).
SEES = {"acme", "coach", "reseller"}


def expected(who: str, params: dict[str, Any], announced: bool) -> dict:
    entitled = who in ("coach", "admin") or announced
    return {WATCHED: "whisper"} if entitled else {}


@pytest.mark.parametrize("first", ["acme", "coach"])
def test_the_mode_reaches_only_those_who_may_see_it(rt, first):
    import webtest

    app = webtest.TestApp(rt.app)
    asks = sorted(ASKS, key=lambda ask: ask[0] != first)  # who asks first fills the caches
    for who, params in asks:
        assert shown(modes(app, who, **params)) == {}, who  # nothing monitored yet
    monitored(rt, "whisper")
    for _ in range(2):  # the second round answers from the cache
        for who, params in asks:
            found = modes(app, who, **params)
            assert (WATCHED in found) == (who in SEES or params.get("customer") == "system")
            if WATCHED in found:
                assert shown(found) == expected(who, params, False), (who, params)
            else:
                assert shown(found) == {}, (who, params)
    announce(rt, 1)  # Acme's own people see it too now
    for who, params in asks:
        found = modes(app, who, **params)
        want = expected(who, params, True) if WATCHED in found else {}
        assert shown(found) == want, (who, params)
    announce(rt, 0)
    monitored(rt, "")
    for who, params in asks:
        assert shown(modes(app, who, **params)) == {}, who


def test_a_past_moment_shows_no_mode(rt):
    import time

    import webtest

    app = webtest.TestApp(rt.app)
    monitored(rt, "barge")
    assert shown(modes(app, "admin", customer="system")) == {WATCHED: "barge"}
    assert shown(modes(app, "admin", customer="system", at=str(int(time.time()) - 1))) == {}


def test_each_change_is_an_upsert_in_every_stream_with_the_viewers_own_value(rt):
    with serving(rt) as address:
        acme, coach = Client(address, query("acme")), Client(address, query("coach"))
        admin = Client(address, query("admin", customer="system"))
        streams = {"acme": acme, "coach": coach, "admin": admin}
        try:
            for client in streams.values():
                client.read_until(lambda c: WATCHED in c.rows)
            monitored(rt, "listen")
            for name in ("coach", "admin"):
                streams[name].read_until(lambda c: c.rows[WATCHED]["monitor"] == "listen")
            # Acme's own administrator gets the upsert too, without the mode.
            acme.read_until(lambda c: any(e[1] == "upsert" for e in c.events))
            assert acme.rows[WATCHED]["monitor"] == ""
            # A new stream starts from a snapshot (SQL): the same per viewer.
            late_acme, late_coach = Client(address, query("acme")), Client(address, query("coach"))
            for client in (late_acme, late_coach):
                client.read_until(lambda c: WATCHED in c.rows)
            assert late_acme.rows[WATCHED]["monitor"] == ""
            assert late_coach.rows[WATCHED]["monitor"] == "listen"
            monitored(rt, "barge")
            coach.read_until(lambda c: c.rows[WATCHED]["monitor"] == "barge")
            acme.read_until(lambda c: len([e for e in c.events if e[1] == "upsert"]) >= 2)
            assert acme.rows[WATCHED]["monitor"] == ""
            late_acme.read_until(lambda c: any(e[1] == "upsert" for e in c.events))
            assert late_acme.rows[WATCHED]["monitor"] == ""
            for client in (late_acme, late_coach):
                client.close()
        finally:
            for client in streams.values():
                client.close()
