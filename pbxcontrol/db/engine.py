"""Engine and session factory: one of each per process.

On PostgreSQL no thread may hang on a dead server (SPEC §12, failover): connections are made
with a connect timeout (per host of a multi-host URL), TCP keepalives and a TCP user timeout,
the server cancels statements after `statement_timeout`, every round trip has a client-side
deadline a little longer (deadline.py: a frozen server cancels nothing), and a pooled
connection is checked (a ping, under the deadline) before each use. `KeptReader`: a
reader's connection kept between its rounds (the stream hub's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.db import deadline, failover

SQLITE_BUSY_TIMEOUT_MS = 10_000
PING_DEADLINE = 2.0  # seconds an empty round trip may take before its connection is dropped


@dataclass(frozen=True)
class Timeouts:
    """[database] connect_timeout and statement_timeout, in seconds. `statement` None: no
    statement timeout and no deadline (initdb: a migration may take as long as it needs)."""

    connect: float = 3.0
    statement: float | None = 5.0

    @property
    def deadline(self) -> float | None:
        """The client's own limit: past the server's, which answers first when it can."""
        return None if self.statement is None else self.statement + 2.0


def make_engine(url: str | URL, *, timeouts: Timeouts | None = None, **kwargs) -> Engine:
    timeouts = timeouts or Timeouts()
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        options = dict(kwargs.pop("connect_args", {}))
        for key, value in postgresql_options(parsed, timeouts).items():
            options.setdefault(key, value)
        engine = create_engine(parsed, connect_args=options, **kwargs)
        Guard(timeouts.deadline).listen(engine)
        return engine
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def postgresql_options(url: URL, timeouts: Timeouts) -> dict[str, Any]:
    """libpq connection parameters, unless the URL sets them itself."""
    wanted: dict[str, Any] = {
        "connect_timeout": max(2, round(timeouts.connect)),  # libpq's minimum is 2
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        # Data unacknowledged for this long (a host gone, not frozen): the connection is dead.
        "tcp_user_timeout": 10_000,
    }
    if timeouts.statement is not None:
        server = (
            f"-c statement_timeout={int(timeouts.statement * 1000)} "
            # A client that froze inside a transaction must not hold its locks (the journal's
            # counter row) for ever.
            "-c idle_in_transaction_session_timeout=60000"
        )
        given = url.query.get("options")
        wanted["options"] = f"{given} {server}" if isinstance(given, str) else server
    return {k: v for k, v in wanted.items() if k == "options" or k not in url.query}


class Guard:
    """A PostgreSQL engine's events: every round trip under the deadline, pooled connections
    checked before use, new ones checked for a promoted server (failover.check_timeline), the
    hosts of a multi-host URL tried in a useful order (failover.Hosts)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds  # None: no deadline (initdb)
        self.watcher = deadline.watcher
        self.hosts = failover.Hosts()

    def listen(self, engine: Engine) -> None:
        event.listen(engine, "do_connect", self.hosts.prefer)
        event.listen(engine, "before_cursor_execute", self.before_statement)
        event.listen(engine, "after_cursor_execute", self.after_statement)
        event.listen(engine, "handle_error", self.failed)
        event.listen(engine, "commit", self.ending)
        event.listen(engine, "rollback", self.ending)
        event.listen(engine.pool, "connect", self.connected)
        event.listen(engine.pool, "checkout", self.checkout)
        event.listen(engine.pool, "reset", lambda dbapi, _record, _state: self.arm(dbapi))
        event.listen(engine.pool, "checkin", lambda dbapi, _record: self.disarm(dbapi))

    def arm(self, dbapi_connection: Any) -> None:
        if self.seconds is not None and dbapi_connection is not None:
            self.watcher.arm(dbapi_connection, self.seconds)

    def disarm(self, dbapi_connection: Any) -> None:
        if dbapi_connection is not None:
            self.watcher.disarm(dbapi_connection)

    def before_statement(self, conn, *_args) -> None:
        self.arm(conn.connection.dbapi_connection)

    def after_statement(self, conn, *_args) -> None:
        self.disarm(conn.connection.dbapi_connection)

    def failed(self, context) -> None:
        cursor = getattr(context, "cursor", None)  # None: it failed to connect at all
        dbapi_connection = getattr(cursor, "connection", None)  # psycopg's cursor has it
        self.disarm(dbapi_connection)
        if dbapi_connection is not None and context.is_disconnect:
            self.hosts.failed(dbapi_connection)

    def ending(self, conn) -> None:
        """A commit or rollback: armed until checked in (there is no event after it)."""
        if not conn.invalidated:  # an invalidated one is rolled back without a round trip
            self.arm(conn.connection.dbapi_connection)

    def connected(self, dbapi_connection, record) -> None:
        with self.watcher.bound(dbapi_connection, self.seconds or 30.0):
            failover.check_timeline(dbapi_connection)
        self.hosts.answered(dbapi_connection)
        record.info["fresh"] = True

    def checkout(self, dbapi_connection, record, _proxy) -> None:
        if record.info.pop("fresh", False):
            return  # just made: it answered
        try:
            with self.watcher.bound(dbapi_connection, min(self.seconds or 30.0, PING_DEADLINE)):
                ping(dbapi_connection)
        except Exception as exc:
            self.hosts.failed(dbapi_connection)
            # The others in the pool are most likely on the same dead server: drop them all
            # rather than wait out a ping on each in turn.
            raise InvalidatePoolError(f"the pooled connection is dead: {exc}") from exc


def ping(dbapi_connection: Any) -> None:
    """One empty round trip outside any transaction (as SQLAlchemy's pool_pre_ping does; done
    here so that the deadline covers it)."""
    before = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute(";")
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = before


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets API readers run while the recorder writes; the busy timeout makes a writer
    # wait for a lock instead of failing at once.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # Directory lookups (millions of names) and big listings miss SQLite's 2 MB page cache;
    # memory-mapped reads cut them by a third or more and, unlike a bigger cache per pooled
    # connection (a 30-minute soak reached 240 MB RSS with 8 MiB each), share the OS page cache.
    cur.execute("PRAGMA mmap_size=268435456")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class KeptReader:
    """The connection of a reader that reads in rounds (the stream hub). PostgreSQL: one kept
    from round to round, in autocommit — each statement reads what is committed, as it would
    in the READ COMMITTED transaction a round used to open; the rounds only read —, so a round
    costs no ping, BEGIN and ROLLBACK (three round trips each, on a busy database). Dropped
    when a round fails: the next connects afresh (to a promoted standby too). SQLite: one per
    round (a read transaction kept open would keep the WAL from being checkpointed)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kept: Connection | None = None

    @contextmanager
    def round(self) -> Iterator[Connection]:
        if self.engine.dialect.name != "postgresql":
            with self.engine.connect() as conn:
                yield conn
            return
        if self.kept is None:
            self.kept = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield self.kept
        except BaseException:
            self.close(invalidate=True)
            raise

    def close(self, invalidate: bool = False) -> None:
        conn, self.kept = self.kept, None
        close_kept(conn, invalidate)


def close_kept(conn: Connection | None, invalidate: bool) -> None:
    """Give up a connection held across rounds (a KeptReader's, the recorder writer's)."""
    if conn is not None:
        with suppress(Exception):
            if invalidate:  # it may be dead, or mid-statement: not back to the pool
                conn.invalidate()
            conn.close()
