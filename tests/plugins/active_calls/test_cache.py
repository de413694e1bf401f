"""The response cache never serves a stale or a foreign answer."""

from __future__ import annotations

import contextlib

from sqlalchemy import delete, event, update

from pbxcontrol import provisioning
from pbxcontrol.db.models import Leg
from tests.plugins.active_calls.conftest import get, ids, insert_legs, leg


def plugin_cache(rt):
    function = rt.api.functions["calls/active/list"].handler
    return function.keywords["cache"]


@contextlib.contextmanager
def statements_on(engine, table: str):
    """The SQL statements run on `engine` meanwhile that read `table`."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if f"FROM {table}" in statement or f"JOIN {table}" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_repeated_request_is_answered_from_the_cache_without_reading_legs(rt, app, monkeypatch):
    insert_legs(rt, [leg("c.1", "c.1", 100, scustomer=3)])
    first = get(app, names="1")
    view = rt.api.functions["calls/active/list"].handler.keywords["view"]
    computed: list[int] = []
    real = view.current
    monkeypatch.setattr(view, "current", lambda *args: computed.append(1) or real(*args))
    with statements_on(rt.engine, "legs") as reads:
        assert get(app, names="1") == first
    assert reads == computed == []
    get(app, names="0")  # another question is computed (from the in-memory view of the legs)
    assert computed == [1]


def test_any_write_to_legs_is_seen_at_once_even_from_another_writer(rt, app):
    insert_legs(rt, [leg("c.1", "c.1", 100, scustomer=3)])
    assert ids(get(app)) == ["c.1"]
    insert_legs(rt, [leg("c.2", "c.2", 101, scustomer=3)])  # not through the recorder
    assert ids(get(app)) == ["c.1", "c.2"]
    with rt.engine.begin() as conn:
        conn.execute(update(Leg).where(Leg.uniqueid == "c.1").values(status="Ringing"))
    assert [r["status"] for r in get(app)["data"]] == ["Ringing", "Up"]
    with rt.engine.begin() as conn:
        conn.execute(delete(Leg).where(Leg.uniqueid == "c.2"))
    assert ids(get(app)) == ["c.1"]


def test_names_and_scope_follow_provisioning_at_once(rt, app):
    insert_legs(rt, [leg("c.1", "c.1", 100, scustomer=3, dnumber="0207946000")])
    assert get(app, names="1")["data"][0]["dnumber_name"] == "Dentist"
    with rt.sessions.begin() as session:
        provisioning.apply(
            session, {"directory": [{"customer": 3, "number": "0207946000", "name": "Dr Who"}]}
        )
    assert get(app, names="1")["data"][0]["dnumber_name"] == "Dr Who"
    assert ids(get(app, as_="reseller", customer="recursive")) == ["c.1"]
    with rt.sessions.begin() as session:  # Acme moves to Reseller B
        provisioning.apply(session, {"customers": [{"id": 3, "name": "Acme Ltd", "parent": 6}]})
    assert ids(get(app, as_="reseller", customer="recursive")) == []


def test_the_same_parameters_from_another_tenant_are_not_shared(rt, app):
    insert_legs(rt, [leg("c.1", "c.1", 100, scustomer=3), leg("c.2", "c.2", 100, scustomer=4)])
    assert ids(get(app, as_="acme")) == ["c.1"]
    assert ids(get(app, as_="beta")) == ["c.2"]
    assert ids(get(app, as_="acme")) == ["c.1"]


def test_a_new_data_version_drops_every_older_answer(rt, app):
    insert_legs(rt, [leg("c.1", "c.1", 100, scustomer=3)])
    cache = plugin_cache(rt)
    for who in ("acme", "beta", "reseller"):
        get(app, as_=who)
    assert len(cache._entries) == 3
    insert_legs(rt, [leg("c.2", "c.2", 101, scustomer=3)])
    get(app, as_="acme")
    assert len(cache._entries) == 1  # the old version's answers can never be asked for again


def test_an_answer_computed_from_older_data_is_not_kept():
    from pbxcontrol.plugins.active_calls.cache import ResponseCache

    cache = ResponseCache(1024)
    cache.put(7, "k", b"new")
    cache.put(6, "k", b"old")  # a slow request that read version 6 finishes last
    assert cache.get(7, "k") == b"new"
    assert cache.get(6, "k") is None
