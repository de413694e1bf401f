"""After a PostgreSQL failover (SPEC §12): the first connection to a promoted standby moves
the change journal and the data version on past anything the old primary may have handed out,
and appends a reset entry (every stream gets a snapshot, a Last-Event-ID from before too); a
multi-host URL tries the host that last answered first and the one that last died last.

A promotion is a new timeline; here the timeline the counters were last moved on is written
by hand, as it would read after a promotion (tests/e2e/test_failover.py promotes a real
standby)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from pbxcontrol.db import failover, journal
from pbxcontrol.db.engine import make_engine

postgresql_only = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def timeline(url: str) -> int:
    """The timeline kept in `counters` (a connection of this engine notes it if unset)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT value FROM counters WHERE name = 'timeline'"))
            return int(found.scalar_one())
    finally:
        engine.dispose()


def position(url: str) -> journal.Position:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return journal.position(conn)
    finally:
        engine.dispose()


def kept_timeline(url: str, value: int) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE counters SET value = :v WHERE name = 'timeline'"), {"v": value})
    engine.dispose()


@postgresql_only
def test_a_new_timeline_moves_the_journal_on_once_with_a_reset(db_url):
    noted = timeline(db_url)  # the first connection notes the timeline, moves nothing
    assert noted >= 1
    first = position(db_url)
    kept_timeline(db_url, noted + 41)  # the counters were last moved on another timeline
    moved = position(db_url)  # that connection found the timeline changed: moved on first
    assert timeline(db_url) == noted
    assert moved.head >= first.head + failover.GAP
    assert moved.version >= first.version + failover.GAP  # no answer cached before matches
    engine = make_engine(db_url)
    with engine.connect() as conn:
        entries = journal.since(conn, first.head, moved.head)
    engine.dispose()
    assert [(e.id, e.op) for e in entries] == [(moved.head, journal.RESET)]
    assert position(db_url) == moved  # the next connections move nothing


@postgresql_only
def test_many_processes_meeting_a_new_timeline_move_the_counters_on_once(db_url):
    kept_timeline(db_url, timeline(db_url) + 1)
    start = threading.Barrier(6)
    moved: list[bool] = []

    def connect() -> None:
        import psycopg

        from tests.databases import password_url

        plain = password_url(db_url).replace("postgresql+psycopg://", "postgresql://")
        start.wait()
        with psycopg.connect(plain) as conn:
            moved.append(failover.check_timeline(conn))

    threads = [threading.Thread(target=connect) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(moved) == [False] * 5 + [True]


def test_the_host_that_last_answered_is_tried_first_and_the_dead_one_last():
    hosts = failover.Hosts()
    params = {"host": "10.0.0.1,10.0.0.2,10.0.0.3", "port": "5432,5433,5434"}

    def order() -> str:
        tried = dict(params)
        hosts.prefer(None, None, None, tried)
        return tried["host"]

    assert order() == "10.0.0.1,10.0.0.2,10.0.0.3"  # as written, until one answers
    hosts.last = ("10.0.0.2", "5433")
    assert order() == "10.0.0.2,10.0.0.1,10.0.0.3"
    hosts.dead = ("10.0.0.1", "5432")
    assert order() == "10.0.0.2,10.0.0.3,10.0.0.1"
    hosts.dead = hosts.last
    assert order() == "10.0.0.1,10.0.0.3,10.0.0.2"


@postgresql_only
def test_least_privilege_roles_after_a_promotion_the_api_serves_and_the_recorder_moves_on(db_url):
    """`pbxcontrol grants`' roles (SPEC §13): the API role may not move the journal (it
    writes none: it connects, finds the timeline new, leaves it to a writer); the recorder
    role's first connection moves it on, before its first write."""
    from tests.core.test_grants import roles

    noted = timeline(db_url)
    first = position(db_url)
    with roles(db_url) as (record_url, api_url):
        kept_timeline(db_url, noted + 7)  # a promotion since the counters were last moved
        api = make_engine(api_url)
        try:
            with api.connect() as conn:  # no permission error: the API serves
                assert journal.position(conn).head == first.head
                kept = conn.execute(text("SELECT value FROM counters WHERE name = 'timeline'"))
                assert kept.scalar_one() == noted + 7  # left to a writer
        finally:
            api.dispose()
        recorder = make_engine(record_url)
        try:
            with recorder.connect() as conn:
                moved = journal.position(conn)
        finally:
            recorder.dispose()
        assert moved.head >= first.head + failover.GAP
        assert timeline(db_url) == noted
