"""A busy database must not cost a recorder its websocket (issue 21): write transactions that
take longer than the lease's expiry keep the lease (renewed on its own connection) and the
events websocket open, and every event read meanwhile is written — on PostgreSQL, against
FakeAri. SQLite has one write lock, which a transaction holds to its end, so there the renewal
waits for the writer and the promise is for transactions shorter than the expiry."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import event, select, text

from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import Machine
from pbxcontrol.recorder.lease import Lease
from pbxcontrol.recorder.machine import MachineRecorder
from pbxcontrol.recorder.renewer import Renewer
from tests.conftest import postgresql_only
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


@postgresql_only("the renewer's kept connection is PostgreSQL's (SQLite renews in a transaction)")
def test_a_renewal_is_one_statement_on_a_kept_connection(sessions):
    """A renewal is a round trip on a host whose CPUs may be starved (50 machines' burst): one
    UPDATE in autocommit on the renewer's own connection, not a pooled checkout (its ping),
    BEGIN, a SET and COMMIT each time."""
    lease = Lease(1, "test:1", takeover=5.0)
    with sessions.begin() as session:
        lease.ensure_row(session, "machine 1")
    with sessions.begin() as session:
        assert lease.try_acquire(session)
    lease.progress()  # a writer alive
    renewer = Renewer(sessions, lease, threading.Event())
    engine = sessions.kw["bind"]
    checkouts, statements = [], []

    def checkout(*_):
        checkouts.append(1)

    def statement(conn, _cursor, text_, *_):
        statements.append((conn.get_execution_options().get("isolation_level"), text_))

    listeners = [("checkout", checkout), ("before_cursor_execute", statement)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        for _ in range(5):
            assert renewer.renew()
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)
        getattr(renewer, "close", lambda: None)()
    assert renewer.renewals == 5 and len(checkouts) <= 1, checkouts
    updates = [s for s in statements if s[1].startswith("UPDATE machines")]
    assert len(updates) == 5 and {mode for mode, _ in updates} == {"AUTOCOMMIT"}, statements
    assert len(statements) <= 6, statements  # the lock wait set once, then one per renewal
    with sessions() as session:  # renewed: by the database's clock, moments ago
        age = select(db_now("postgresql") - Machine.renewed_at).where(Machine.id == 1)
        assert 0 <= session.execute(age).scalar() < 2.0
