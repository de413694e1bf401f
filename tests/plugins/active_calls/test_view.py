"""The in-memory view of the live legs (view.py) answers exactly as the list's SQL, on both
engines: over random legs written through the recorder's store, random requests and
provisioning changes (names and the tree), with the journal pruned under it, and from two
API processes on one database."""

from __future__ import annotations

import json
import threading
import time

import pytest
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from pbxcontrol.db import journal
from pbxcontrol.plugin import tables
from pbxcontrol.service import server as http_server
from tests.conftest import LIST, build_provisioned, write_config
from tests.plugins.active_calls.changes_support import (
    NUMBERS,
    PARAMS,
    PEOPLE,
    apply_step,
    steps,
)
from tests.plugins.active_calls.conftest import leg
from tests.plugins.active_calls.stream_support import query, write_legs

legs = tables.legs

NO_CACHE = "[plugin:active_calls]\ncache_megabytes = 0\n"


def plugin_view(rt):
    return rt.api.functions["calls/active/list"].handler.keywords["view"]


def sql_twin(tmp_path, url) -> runtime.Runtime:
    """A second API process on the same database answering by SQL (memory_view = no)."""
    config = write_config(tmp_path, NO_CACHE + "memory_view = no\n", db=url)
    return runtime.build(config_mod.load(str(config)), record=False)


@pytest.fixture(scope="module")
def pair(database, databases, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("view")
    with databases.fresh(database, tmp) as url:
        rt = build_provisioned(write_config(tmp, NO_CACHE, db=url))
        twin = sql_twin(tmp_path_factory.mktemp("view-sql"), url)
        yield rt, webtest.TestApp(rt.app), webtest.TestApp(twin.app), {}
        twin.close()
        rt.close()


@pytest.fixture
def twin(tmp_path, db_url):
    """The SQL twin of `app` (the `rt` fixture's database), closed after the test."""
    (tmp_path / "twin").mkdir()
    built = sql_twin(tmp_path / "twin", db_url)
    yield webtest.TestApp(built.app)
    built.close()


def answers(app, who: str, params: dict[str, str]):
    response = app.get(LIST + "?" + query(who, **params), expect_errors=True)
    return response.status_int, json.loads(response.body)


requests = st.lists(
    st.tuples(
        st.sampled_from(sorted(PEOPLE)),
        st.lists(st.sampled_from(sorted(PARAMS)), max_size=3, unique=True).flatmap(
            lambda keys: st.fixed_dictionaries({k: st.sampled_from(PARAMS[k]) for k in keys})
        ),
    ),
    min_size=1,
    max_size=4,
)
#: Provisioning changes that change names or scopes: a directory entry (global or a
#: customer's) for a number the legs carry, or Acme / Acme Branch moved in the tree.
provisioning_changes = st.one_of(
    st.fixed_dictionaries(
        {
            "directory": st.lists(
                st.fixed_dictionaries(
                    {
                        "customer": st.sampled_from([None, 2, 3, 4, 7]),
                        "number": st.sampled_from(NUMBERS),
                        "name": st.sampled_from(["Zed", "Åsa", "", "dentist"]),
                    }
                ),
                min_size=1,
                max_size=2,
                unique_by=lambda e: (e["customer"], e["number"]),
            )
        }
    ),
    st.sampled_from([(3, "Acme Ltd", 2), (3, "Acme Ltd", 6), (5, "Acme Branch", 3)]).map(
        lambda c: {"customers": [{"id": c[0], "name": c[1], "parent": c[2]}]}
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    asked=requests,
    initial=steps,
    changes=st.lists(st.one_of(steps.map(lambda s: ("legs", s)), provisioning_changes), max_size=5),
)
def test_the_view_answers_exactly_as_the_sql(pair, asked, initial, changes):
    rt, app, sql, live = pair
    if live:
        for machine in (1, 2):
            write_legs(rt, machine, gone=[row for (m, _), row in live.items() if m == machine])
        live.clear()
    clock = [1000]
    for ops in initial:
        apply_step(rt, live, ops, clock)
    for change in [None, *changes]:
        if isinstance(change, tuple):
            for ops in change[1]:
                apply_step(rt, live, ops, clock)
        elif change is not None:
            with rt.sessions.begin() as session:
                provisioning.apply(session, change)
        for who, params in asked:
            assert answers(app, who, params) == answers(sql, who, params), (who, params)


def test_text_sorts_by_code_point_on_both_engines(rt, app, tmp_path, db_url):
    numbers = ["b", "B", "a", "é", "Z", "10", "9", "ä", "_x"]
    rows = [leg(f"{i}.1", f"{i}.1", 100, scustomer=3, snumber=n) for i, n in enumerate(numbers)]
    write_legs(rt, 1, upsert=rows)
    (tmp_path / "twin").mkdir()
    twin = sql_twin(tmp_path / "twin", db_url)
    try:
        for descending in ("0", "1"):
            got = answers(app, "acme", {"sort": "snumber", "descending": descending})[1]["data"]
            listed = [r["snumber"] for r in got]
            assert listed == sorted(numbers, reverse=descending == "1")
            by_sql = answers(
                webtest.TestApp(twin.app), "acme", {"sort": "snumber", "descending": descending}
            )
            assert by_sql[1]["data"] == got
    finally:
        twin.close()


def test_a_change_reads_only_the_changed_legs_and_a_reset_reads_all(rt, app):
    view = plugin_view(rt)
    write_legs(rt, 1, upsert=[leg("1.1", "1.1", 100, scustomer=3, dnumber="0207946000")])
    assert [r["dnumber_name"] for r in answers(app, "acme", {"names": "1"})[1]["data"]] == [
        "Dentist"
    ]
    loads = view.reloads
    write_legs(rt, 1, upsert=[leg("2.1", "2.1", 101, scustomer=3)])
    assert len(answers(app, "acme", {})[1]["data"]) == 2
    assert view.reloads == loads  # caught up from the journal
    with rt.sessions.begin() as session:  # names change: a reset entry, everything read again
        provisioning.apply(
            session, {"directory": [{"customer": 3, "number": "0207946000", "name": "Dr No"}]}
        )
    named = answers(app, "acme", {"names": "1"})[1]["data"]
    assert [r["dnumber_name"] for r in named] == ["Dr No", ""]
    assert view.reloads == loads + 1


def test_a_view_behind_the_pruned_journal_reads_everything_again(rt, app):
    view = plugin_view(rt)
    write_legs(rt, 1, upsert=[leg("1.1", "1.1", 100, scustomer=3)])
    assert len(answers(app, "acme", {})[1]["data"]) == 1
    loads = view.reloads
    write_legs(rt, 1, upsert=[leg("2.1", "2.1", 101, scustomer=3)])
    write_legs(rt, 1, gone=[leg("1.1", "1.1", 100, scustomer=3)])
    with rt.engine.begin() as conn:  # what the recorders' sweep does after journal_seconds
        journal.prune(conn, cutoff=1e12, limit=1000)
    assert [r["uniqueid"] for r in answers(app, "acme", {})[1]["data"]] == ["2.1"]
    assert view.reloads == loads + 1


def test_two_api_processes_on_one_database_both_follow_every_change(rt, app, tmp_path, db_url):
    (tmp_path / "other").mkdir()
    config = write_config(tmp_path / "other", NO_CACHE, db=db_url)
    other_rt = runtime.build(config_mod.load(str(config)), record=False)
    other = webtest.TestApp(other_rt.app)
    try:
        for step, uid in enumerate(["1.1", "2.1", "3.1"]):
            write_legs(rt, 1, upsert=[leg(uid, uid, 100 + step, scustomer=3)])
            for api in (app, other):
                assert len(answers(api, "acme", {})[1]["data"]) == step + 1
        write_legs(rt, 1, gone=[leg("2.1", "2.1", 101, scustomer=3)])
        for api in (app, other):
            assert [r["uniqueid"] for r in answers(api, "acme", {})[1]["data"]] == ["1.1", "3.1"]
    finally:
        other_rt.close()


def test_a_write_without_a_journal_entry_is_seen_when_it_is_the_only_one(rt, app):
    write_legs(rt, 1, upsert=[leg("1.1", "1.1", 100, scustomer=3, status="Ring")])
    assert answers(app, "acme", {})[1]["data"][0]["status"] == "Ring"
    with rt.engine.begin() as conn:  # an operator's SQL: the data version moves, the journal not
        conn.execute(update(legs).where(legs.c.uniqueid == "1.1").values(status="Up"))
    assert answers(app, "acme", {})[1]["data"][0]["status"] == "Up"


def test_case_insensitive_filters_fold_as_the_database_does(rt, app, twin):
    names = ["ÅSA Öberg", "åsa öberg", "ASA", "Kelvin \u212a"]
    rows = [
        leg(f"{i}.1", f"{i}.1", 100 + i, scustomer=3, callername_internal=n)
        for i, n in enumerate(names)
    ]
    write_legs(rt, 1, upsert=rows)
    for wanted in ("å", "Å", "asa", "öBERG", "k"):
        for mode in ("contains", "starts", "ends", "exact"):
            params = {"callername_number": wanted, "callername_match": mode}
            assert answers(app, "acme", params) == answers(twin, "acme", params), params


def test_answers_stay_whole_while_threads_read_and_a_writer_churns(rt, app, twin):
    """Four request threads on one view while legs come and go: every answer is a whole,
    ordered list (no leg twice, none half-applied), and the last equals the SQL's."""
    errors: list[BaseException] = []
    stop = threading.Event()
    q = query("admin", customer="system", names="1", sort="snumber")

    def reader() -> None:
        while not stop.is_set():
            try:
                code, body = rt.api.dispatch("calls/active/list", "GET", q, b"")
                data = json.loads(body)["data"]
                keys = [(r["snumber"], r["start"], r["uniqueid"]) for r in data]
                assert code == 200 and keys == sorted(keys) and len(set(keys)) == len(keys)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    # One password check first: four first checks at once from one address would meet the
    # password-check slots (SPEC §13: one /64 holds one of the 2), which is not this test's point.
    assert rt.api.dispatch("calls/active/list", "GET", q, b"")[0] == 200
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    live: list[dict] = []
    for i in range(150):
        row = leg(f"{i}.1", f"{i}.1", 100 + i % 7, scustomer=3, snumber=str(i % 11))
        ended = live[:1] if len(live) > 20 else []
        write_legs(rt, 1, upsert=[row], gone=ended)
        live = [*live[len(ended) :], row]
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    params = {"customer": "system", "names": "1", "sort": "snumber"}
    assert answers(app, "admin", params) == answers(twin, "admin", params)
    assert len(answers(app, "admin", params)[1]["data"]) == len(live)


def test_a_catch_up_cut_short_by_the_database_reads_everything_next_time(rt, app, monkeypatch):
    from pbxcontrol.plugins.active_calls import view as view_module

    write_legs(rt, 1, upsert=[leg(f"{i}.1", f"{i}.1", 100 + i, scustomer=3) for i in range(3)])
    assert len(answers(app, "acme", {})[1]["data"]) == 3
    real = view_module._read

    def failing(conn, keys):  # the database goes away half way through the rows
        for i, item in enumerate(real(conn, keys)):
            if i == 1:
                raise ConnectionError("server closed the connection")
            yield item

    monkeypatch.setattr(view_module, "_read", failing)
    with rt.sessions.begin() as session:  # a reset: the next answer reads every leg
        provisioning.apply(session, {"directory": [{"customer": 3, "number": "9", "name": "N"}]})
    assert answers(app, "acme", {})[1]["responses"][0]["code"] == "500"
    monkeypatch.setattr(view_module, "_read", real)
    assert len(answers(app, "acme", {})[1]["data"]) == 3


def _caught_up(rt, view, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.engine.connect() as conn:
            head = journal.position(conn).head
        if view.seen is not None and view.seen.head == head:
            return True
        time.sleep(0.01)
    return False


def test_the_stream_hub_keeps_the_view_current_without_a_request(rt, app):
    """Off the request path: once a request has loaded the view, the hub's rounds catch it up
    (SQLite: within its poll); `changed()` (a recorder's commit in `serve`) at once."""
    view = plugin_view(rt)
    server = http_server.make_server(rt.app, http_server.listen("127.0.0.1", 0), 2, rt.streams)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    hub = server.hub
    try:
        write_legs(rt, 1, upsert=[leg("1.1", "1.1", 100, scustomer=3)])
        assert len(answers(app, "acme", {})[1]["data"]) == 1  # loaded by a request
        write_legs(rt, 1, upsert=[leg("2.1", "2.1", 101, scustomer=3)])
        assert _caught_up(rt, view, timeout=2.0)  # no request in between
        hub.poll = 60.0  # only a wake-up now
        time.sleep(0.3)  # the round that was due has run
        write_legs(rt, 1, upsert=[leg("3.1", "3.1", 102, scustomer=3)])
        hub.changed()
        assert _caught_up(rt, view, timeout=1.0)
        assert len(view.rows) == 3
    finally:
        hub.stop()
        server.close()
        thread.join(5)


class HeldRequest:
    """A request whose catch-up is held in its SQL (the view's `_read`) until `release`; the
    view's reads are counted by thread name. Leg 1.1 is loaded first, 2.1 written for the
    request to read."""

    def __init__(self, rt, app, monkeypatch) -> None:
        from pbxcontrol.plugins.active_calls import view as view_module

        self.view = plugin_view(rt)
        write_legs(rt, 1, upsert=[leg("1.1", "1.1", 100, scustomer=3)])
        assert len(answers(app, "acme", {})[1]["data"]) == 1  # loaded by a request
        real = view_module._read
        self.reads: list[str] = []
        self.reading, self.release = threading.Event(), threading.Event()

        def held(conn, keys):
            self.reads.append(threading.current_thread().name)
            if threading.current_thread().name == "request":
                self.reading.set()
                self.release.wait(10)
            yield from real(conn, keys)

        monkeypatch.setattr(view_module, "_read", held)
        write_legs(rt, 1, upsert=[leg("2.1", "2.1", 101, scustomer=3)])
        self.answered: list = []
        self.thread = threading.Thread(
            target=lambda: self.answered.append(answers(app, "acme", {})), name="request"
        )
        self.thread.start()
        assert self.reading.wait(5)

    def end(self) -> list[str]:
        """Let it go; the uniqueids it answered."""
        self.release.set()
        self.thread.join(10)
        return [r["uniqueid"] for r in self.answered[0][1]["data"]]


def test_a_requests_catch_up_read_does_not_hold_the_hub_back(rt, app, twin, monkeypatch):
    """A request reads what changed outside the view's lock: the hub's catch-up to a newer
    position (and so every stream's upsert after it) runs while a request's SQL is still under
    way — with the read under the lock it waited for it (here the 10 s the request is held)."""
    request = HeldRequest(rt, app, monkeypatch)
    view = request.view
    try:
        write_legs(rt, 1, upsert=[leg("3.1", "3.1", 102, scustomer=3)])  # past the request's
        started = time.monotonic()
        with rt.engine.connect() as conn:
            view.follow(conn)  # the hub's round
            head = journal.position(conn).head
        followed = time.monotonic() - started
        assert not request.release.is_set() and followed < 5, followed
        assert view.seen is not None and view.seen.head == head
        assert sorted(view.rows) == [(1, "1.1"), (1, "2.1"), (1, "3.1")]
    finally:
        answered = request.end()
    # The request's answer is at least as new as what it read (here: newer, the hub's).
    assert answered == ["1.1", "2.1", "3.1"]
    assert answers(app, "acme", {}) == answers(twin, "acme", {})


def test_two_catch_ups_to_the_same_position_read_the_changes_once(rt, app, twin, monkeypatch):
    """The hub and a request after the same commit: the second waits for the first's swap
    instead of reading the same legs again (on a busy machine the reads were twice the work)."""
    request = HeldRequest(rt, app, monkeypatch)
    followed: list[float] = []

    def hub() -> None:
        started = time.monotonic()
        with rt.engine.connect() as conn:
            request.view.follow(conn)
        followed.append(time.monotonic() - started)

    round_ = threading.Thread(target=hub, name="hub")
    try:
        round_.start()
        time.sleep(0.3)
        assert not followed  # waiting for the request's read, not reading again
    finally:
        answered = request.end()
        round_.join(10)
    assert request.reads == ["request"] and followed, (request.reads, followed)
    assert answered == ["1.1", "2.1"]
    assert sorted(request.view.rows) == [(1, "1.1"), (1, "2.1")]
    assert answers(app, "acme", {}) == answers(twin, "acme", {})
