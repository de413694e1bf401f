"""The change journal's ids in commit order, with writers racing (SPEC §8, issue 21): several
machines' writers commit entries concurrently, each holding its transaction open a random while
after taking its ids, and a reader polls the head and the entries all along. It must never see
an entry commit below an id it has already passed, and at the end it has seen every entry
exactly once. Without the commit-ordered horizon (pbxcontrol/db/horizon.py) — the sequence's
last id taken as the head, as a per-machine or shared sequence alone gives — it does not."""

from __future__ import annotations

import random
import threading
import time

from sqlalchemy import text

from pbxcontrol.db import horizon, journal
from pbxcontrol.db.engine import make_engine
from tests.conftest import postgresql_only

WRITERS, TRANSACTIONS, ENTRIES = 6, 25, 3
READERS = 2  # threads of one process, sharing its horizon (as an API process's do)


def race(db_url: str) -> dict[str, object]:
    """Run the writers and the readers; what the readers saw, and what they got wrong."""
    engine = make_engine(db_url, pool_size=WRITERS + READERS + 1)
    done = threading.Event()
    report: dict[str, object] = {"late": [], "seen": [], "errors": []}

    def writer(machine: int) -> None:
        rnd = random.Random(machine)
        for n in range(TRANSACTIONS):
            with engine.begin() as conn:
                time.sleep(rnd.uniform(0, 0.005))
                rows = [
                    {"uniqueid": f"{machine}.{n}.{i}", "scustomer": machine, "dcustomer": 0}
                    for i in range(ENTRIES)
                ]
                journal.record_legs(conn, machine, rows, [], {})
                time.sleep(rnd.uniform(0, 0.03))  # ids taken, not yet committed

    def reader() -> None:
        position, seen, late = 0, [], report["late"]
        assert isinstance(late, list)
        everyone = report["seen"]
        assert isinstance(everyone, list)
        everyone.append(seen)
        while True:
            finished = done.is_set()
            with engine.connect() as conn:
                head, _ = journal.head(conn)
                for entry in journal.since(conn, position, head):
                    seen.append(entry.uniqueid)
                position = max(position, head)
                # An entry below the position that the reader did not see committed late.
                below = conn.execute(
                    text("SELECT count(*) FROM leg_changes WHERE id <= :p"), {"p": position}
                ).scalar_one()
                if below != len(seen):
                    late.append((position, below, len(seen)))
            if finished:
                return
            time.sleep(0.002)

    threads = [threading.Thread(target=writer, args=(m,)) for m in range(1, WRITERS + 1)]

    def guarded() -> None:  # one reader
        try:
            reader()
        except BaseException as exc:  # reported to the test
            errors = report["errors"]
            assert isinstance(errors, list)
            errors.append(exc)

    watchers = [threading.Thread(target=guarded) for _ in range(READERS)]
    for watcher in watchers:
        watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    time.sleep(0.05)
    done.set()
    for watcher in watchers:
        watcher.join(60)
    with engine.connect() as conn:
        report["all"] = sorted(conn.execute(text("SELECT uniqueid FROM leg_changes")).scalars())
    engine.dispose()
    assert report["errors"] == []
    return report


def test_a_reader_sees_every_entry_once_and_none_below_its_position(db_url):
    report = race(db_url)
    seen, written = report["seen"], report["all"]
    assert isinstance(seen, list) and isinstance(written, list)
    assert len(written) == WRITERS * TRANSACTIONS * ENTRIES
    assert report["late"] == []  # no entry committed below an id a reader had passed
    assert len(seen) == READERS
    for one in seen:
        assert sorted(one) == written  # each exactly once


@postgresql_only("SQLite hands out ids one writer at a time: there is no horizon to remove")
def test_without_the_horizon_the_same_race_loses_entries(db_url, monkeypatch):
    """The test above can fail: the sequence's last id taken as the head loses entries."""
    monkeypatch.setattr(horizon.Horizon, "advance", lambda self, last, writers, sent, back: last)
    report = race(db_url)
    seen, written = report["seen"], report["all"]
    assert isinstance(seen, list) and isinstance(written, list)
    assert report["late"] and any(len(set(one)) < len(written) for one in seen)


def test_the_horizon_waits_for_the_writers_in_flight_when_the_sequence_was_read():
    h, clock = horizon.Horizon(), iter(range(100))

    def probe(last: int, writers: list[str]) -> int:
        sent = next(clock)
        return h.advance(last, writers, sent, sent + 0.5)

    assert probe(5, []) == 5  # nobody writing: the last id taken
    assert probe(9, ["3/10", "4/7"]) == 5 and h.settling  # 6..9 may be theirs
    assert probe(12, ["4/7", "5/2"]) == 5  # 4/7 still in flight
    assert probe(14, ["5/2"]) == 9  # those of 9 are over; 5/2 may hold up to 12
    # 5/2 is over, so is every id up to 14; 6/1 was not writing when 14 was read: its ids
    # come after, and 16 waits for it.
    assert probe(16, ["6/1"]) == 14 and h.settling
    assert probe(17, []) == 17 and not h.settling
    assert probe(3, []) == 3  # a sequence that went back: a new database


def test_a_probe_sent_before_another_returned_settles_nothing_of_it():
    """Two threads: B's probe (sent at 1, back at 2) saw writer 7/1 in flight; A's probe, sent
    at 0 before 7/1 marked itself, returns last and must not settle B's pair."""
    h = horizon.Horizon()
    assert h.advance(20, ["7/1"], 1.0, 2.0) == 0
    assert h.advance(18, ["6/6"], 0.0, 3.0) == 0  # sent before B's returned: 20 stays open
    assert h.advance(21, ["8/8"], 4.0, 4.5) == 20  # sent after: 7/1 is over


@postgresql_only("pg_locks shows every database of the server; SQLite has no horizon")
def test_a_writer_in_another_database_of_the_server_does_not_hold_the_head_back(
    db_url, databases, tmp_path
):
    """Two pbxcontrol databases on one PostgreSQL (staging beside production, the suite's
    parallel workers): the other's journal writer in flight is not a writer of this journal."""
    with databases.fresh("postgresql", tmp_path / "other") as other_url:
        here, other = make_engine(db_url), make_engine(other_url)
        try:
            with here.begin() as conn:
                journal.record_legs(
                    conn, 1, [{"uniqueid": "1.1", "scustomer": 1, "dcustomer": 0}], [], {}
                )
            with other.begin() as busy:  # its ids taken, not yet committed
                journal.record_legs(
                    busy, 2, [{"uniqueid": "2.1", "scustomer": 2, "dcustomer": 0}], [], {}
                )
                with here.connect() as conn:
                    head, _ = journal.head(conn)
                    assert head >= 1 and not journal.settling(conn)
        finally:
            here.dispose()
            other.dispose()
