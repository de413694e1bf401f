"""Engine and session factory: one of each per process."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str, **kwargs) -> Engine:
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


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
