"""A busy database must not cost a recorder its websocket (issue 21): write transactions that
take longer than the lease's expiry keep the lease (renewed on its own connection) and the
events websocket open, and every event read meanwhile is written — on PostgreSQL, against
FakeAri. SQLite has one write lock, which a transaction holds to its end, so there the renewal
waits for the writer and the promise is for transactions shorter than the expiry."""

from __future__ import annotations

import logging
import time

from sqlalchemy import text

from pbxcontrol.recorder.machine import MachineRecorder
from tests.recorder.test_lease import TAKEOVER, AsteriskAri, lease_row
from tests.recorder.test_reconnect import converged, emit_all, split, wait_until

STALL = 2.0  # seconds each write transaction takes: more than the expiry (0.6 x TAKEOVER)
SQLITE_STALL = 0.8  # less than the expiry


def stall(session) -> None:
    """The transaction is slow on the server (PostgreSQL: active, not idle in transaction)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_sleep(:s)"), {"s": STALL})
    else:
        time.sleep(SQLITE_STALL)


def test_slow_commits_keep_the_lease_and_the_websocket(sessions, caplog):
    startup, before, after = split("trunk_to_phone_answered", "answered")
    fake = AsteriskAri(startup)
    rec = MachineRecorder(1, fake, sessions, takeover=TAKEOVER, holder="slow:1")
    rec.start()
    try:
        wait_until(rec.synced.is_set, what="recording")
        real_run = rec.tx.run

        def slow_run(work, what, fenced=True):
            def slow(session):
                result = work(session)
                stall(session)
                return result

            return real_run(slow, what, fenced)

        rec.tx.run = slow_run  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            emit_all(fake, before)
            assert not rec.stopping.wait(3 * STALL)  # several slow transactions
            emit_all(fake, after)
            wait_until(converged(sessions, fake), timeout=6 * STALL, what="the legs written")
        assert "the lease is not confirmed" not in caplog.text
        assert "lost the lease" not in caplog.text
        assert fake.opened == 1 and not fake.stream.closed
        assert lease_row(sessions).epoch == 1 and rec.holding.is_set()
    finally:
        rec.stop()
