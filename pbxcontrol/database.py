"""The process's database as the config names it: the engine, the schema this release may
run on (pbxcontrol.db.migrate), `initdb` under the migration lock; and the one-line errors that
stop start-up."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from pbxcontrol.auth.keys import ensure_key
from pbxcontrol.config import Config
from pbxcontrol.db import migrate
from pbxcontrol.db.engine import Timeouts, make_engine, make_sessionmaker
from pbxcontrol.db.outage import DatabaseUnavailable, describe, outage_in
from pbxcontrol.service import notify

log = logging.getLogger("pbxcontrol")


class StartupError(Exception):
    """Start-up cannot go on; the message (one line) is for the operator. `status` is the exit
    status: 2, a configuration error (systemd does not restart: RestartPreventExitStatus=2)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def database_engine(config: Config, *, statements: bool = True) -> Engine:
    """The process's engine (it connects on first use). `statements` False: no statement
    timeout (initdb: a migration takes as long as it needs)."""
    # One pooled connection per HTTP worker thread and recorder (plus spare): with the default
    # pool of 5, 8 waitress threads overflow and open/close a connection (and rerun the SQLite
    # pragmas) on most requests.
    timeouts = Timeouts(config.connect_timeout, config.statement_timeout if statements else None)
    try:
        return make_engine(
            config.database_url,
            timeouts=timeouts,
            pool_size=config.http_threads + len(config.machines) + 2,
        )
    except Exception as exc:  # a URL SQLAlchemy cannot parse, a driver not installed
        raise StartupError(
            f"[database] url: {_first_line(exc)} (several PostgreSQL hosts: "
            "postgresql+psycopg://USER:PASSWORD@/DB?host=H1:PORT1&host=H2:PORT2"
            "&target_session_attrs=read-write)"
        ) from None


def open_database(config: Config, *, create_if_empty: bool = True) -> tuple[Engine, sessionmaker]:
    """The engine on a database whose schema this release runs on (one try: the database
    not answering raises DatabaseUnavailable)."""
    engine = database_engine(config)
    try:
        ready_schema(engine, create_if_empty=create_if_empty)
    except BaseException as exc:
        engine.dispose()
        outage = outage_in(exc)
        if outage is not None and not isinstance(exc, StartupError):
            raise DatabaseUnavailable(f"the database is unreachable: {describe(outage)}") from None
        raise
    return engine, make_sessionmaker(engine)


def ready_schema(engine: Engine, *, create_if_empty: bool = True, waited: bool = False) -> None:
    """Refuse a schema this release must not run on (one line naming what to do); create it
    in an empty database. After a wait for the database (`waited`) an older schema exits
    with status 1, not 2: under systemd the restart runs `initdb` (ExecStartPre) again, which
    could not reach the database before."""
    schema = migrate.schema(engine)
    state = schema.state()
    if state == migrate.EMPTY and create_if_empty:
        log.info("empty database: creating the schema")
        migrate.upgrade(engine)
    elif state == migrate.EMPTY:
        raise StartupError("the database is empty: run `pbxcontrol initdb`")
    elif state == migrate.NEWER:
        log.info(
            "database schema %s is newer than this release's (%s) and compatible with it "
            "(additive since %s)",
            *(schema.revision, migrate.head_revision(), schema.floor),
        )
    elif (problem := schema.problem()) is not None:
        raise StartupError(problem, 1 if waited and state == migrate.OLDER else 2)


def initdb(config: Config) -> str:
    """Create or upgrade the schema, under the migration lock (many hosts at once: one
    migrates, the others wait and find it current); what was done, for the operator."""
    engine = database_engine(config, statements=False)
    try:
        with notify.extending_start():  # a long migration, under systemd's ExecStartPre
            before, after = migrate.upgrade(engine)
        new_key = ensure_key(engine)  # made by the migration; again here if deleted (rotation)
    except migrate.IncompatibleSchema as exc:
        raise StartupError(str(exc)) from None
    except Exception as exc:
        if (outage := outage_in(exc)) is not None:
            raise DatabaseUnavailable(
                f"initdb: the database is unreachable: {describe(outage)}"
            ) from None
        raise StartupError(f"initdb failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    if after.state() == migrate.NEWER:
        return (
            f"database schema is at revision {after.revision}, newer than this release's "
            f"({migrate.head_revision()}) and compatible with it: nothing to do"
        )
    if before.revision == after.revision:
        made = "; made a new token signing key" if new_key else ""
        return f"database schema is up to date (revision {after.revision}){made}"
    return (
        f"database schema upgraded from {before.revision or 'empty'} to revision {after.revision}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
