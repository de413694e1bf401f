"""What a stream hub round costs the database once the in-memory view serves the streams
(issue 21: a 50-machine busy hour saturated each API's hub thread): the journal's new
entries read once per round (the view follows from what the hub read), no statement compiled
again (a statement SQLAlchemy cannot cache is compiled at every execution), and a count
stream counted from the view, not by a query over every leg of its scope."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import default

from pbxcontrol.service import server as http_server
from pbxcontrol.streams import hub
from tests.conftest import LIST
from tests.plugins.active_calls.conftest import ALICE, leg
from tests.plugins.active_calls.stream_support import Client, query, serving, write_legs


class HubStatements:
    """(SQL, cache verdict) of every statement the stream hub's thread runs."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        event.listen(engine, "after_cursor_execute", self._after)

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.current_thread().name == "stream hub":
            with self.lock:
                self.seen.append((statement, context.cache_hit if context else -1))

    def take(self) -> list[tuple[str, int]]:
        with self.lock:
            taken, self.seen = self.seen, []
        return taken

    def close(self) -> None:
        event.remove(self.engine, "after_cursor_execute", self._after)


def journal_reads(statements: list[tuple[str, int]]) -> int:
    """Reads of the journal's entries (not its head: the probe reads counters)."""
    return sum(1 for sql, _ in statements if "FROM leg_changes" in sql)


def test_a_round_reads_the_journal_once_and_compiles_nothing_again(rt, app):
    app.get(LIST + "?" + query("admin", customer="system"))  # the view is wanted: loaded
    watched = HubStatements(rt.engine)
    try:
        with serving(rt) as address:
            everything = Client(address, query("admin", customer="system", names="1"))
            counted = Client(address, query("reseller", customer="recursive", count="1"))
            everything.read_until(lambda c: c.events)
            counted.read_until(lambda c: c.count is not None)
            for n in range(1, 4):  # the first round with a change warms the caches
                watched.take()
                write_legs(rt, 1, upsert=[leg(f"h.{n}", f"h.{n}", 100 + n, **ALICE)])
                everything.read_until(lambda c, n=n: (1, f"h.{n}") in c.rows)
                counted.read_until(lambda c, n=n: c.count == n)
            rounds = watched.take()
            everything.close()
            counted.close()
    finally:
        watched.close()
    assert journal_reads(rounds) == 1, [sql for sql, _ in rounds]
    uncached = [sql for sql, hit in rounds if hit != default.CACHE_HIT]
    assert not uncached, uncached
    assert not [sql for sql, _ in rounds if "count(" in sql.lower()]


def test_a_kept_connection_that_dies_is_replaced_at_the_next_round(rt, database):
    """PostgreSQL: the hub keeps its connection between rounds; when the server ends it (a
    restart, a failover, an administrator), the round fails, the connection is dropped and
    the next round connects afresh: the stream goes on. SQLite: none is kept (a read
    transaction left open would keep the WAL from being checkpointed)."""
    sock = http_server.listen("127.0.0.1", 0)
    server = http_server.make_server(rt.app, sock, 2, rt.streams)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    hub = server.hub
    try:
        client = Client(sock.getsockname()[:2], query("admin", customer="system"))
        client.read_until(lambda c: c.events)
        if database == "sqlite":
            assert hub._reader.kept is None
        else:
            deadline = time.monotonic() + 5
            while hub._reader.kept is None and time.monotonic() < deadline:
                time.sleep(0.05)
            kept = hub._reader.kept
            assert kept is not None
            pid = kept.connection.dbapi_connection.info.backend_pid
            with rt.engine.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        write_legs(rt, 1, upsert=[leg("k.1", "k.1", 300, **ALICE)])
        client.read_until(lambda c: (1, "k.1") in c.rows, timeout=10)
        if database != "sqlite":
            assert hub._reader.kept is not kept
        client.close()
    finally:
        hub.stop()
        server.close()
        thread.join(5)


def test_a_quick_round_is_followed_at_once_and_a_long_one_after_a_rest():
    """A round of a few milliseconds (one recorder's commit, a few streams) costs the next
    change no rest: it waited half a round before, most of the stream's lag in `serve` after
    the commit. A long round (many streams, many changes) still rests in proportion to it."""
    assert hub.rest_after(0.0) == 0.0
    assert hub.rest_after(hub.REST_FREE) == 0.0
    assert hub.rest_after(0.105) == pytest.approx(0.05)
    assert hub.rest_after(10.0) == hub.MAX_REST
