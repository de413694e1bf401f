"""Create or upgrade the schema in place (`pbxcontrol initdb`), idempotently and under a lock;
and which schemas a release may run on (SPEC §12, upgrades without downtime).

- **One migrates, the others wait.** `upgrade` holds a lock while it reads the revision and
  migrates: PostgreSQL's transaction-scoped advisory lock `LOCK_KEY`, SQLite's `flock` on
  the file DATABASE-initdb beside the database. `initdb` on many hosts at once: the first
  migrates, the others wait for it, then find the schema current.
- **Revisions.** Alembic keeps the schema's revision in `schema_revision` (VERSION_TABLE).
  `alembic_version`, Alembic's table up to revision LEGACY_HEAD (0017), now holds the *floor*:
  the oldest head a release may have and still run here. Releases up to LEGACY_HEAD compared
  that table with their head and run only where it names it, so the floor is the newest
  revision up to the schema's that is not additive, or LEGACY_HEAD itself when it is newer:
  the release before the floor keeps running on a schema later releases changed only
  additively, and refuses once a breaking migration moved the floor past it.
- **Additive.** Every migration from 0014 on says `additive = True` when code of the release
  before it keeps working on its schema: it adds tables, columns that are nullable or have a
  server default, indexes, rows; it drops, renames or retypes nothing, adds no constraint that
  older writes would break, and changes no meaning older code relies on. Otherwise `additive =
  False`, or a dict by engine when it holds on one engine only (0016: `{"sqlite": True,
  "postgresql": False}`); tests/core/test_upgrades.py checks that each says which. (Up to
  LEGACY_HEAD the floor is the revision itself whatever they say: those releases compare.)
- **Which schema a release runs on** (`check`): its head; or a revision it does not know (a
  newer release migrated it) whose floor is its head or an ancestor of it. A revision it
  knows, older than its head: refused, "run `pbxcontrol initdb`".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, text

from pbxcontrol.db.outage import DatabaseUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "schema_revision"
FLOOR_TABLE = "alembic_version"
#: pg_advisory_xact_lock's key for migrations: b"pbxinitd" as a number. Never change it.
LOCK_KEY = int.from_bytes(b"pbxinitd", "big")
#: The head of the last release without the floor: it compares `alembic_version` with its head.
LEGACY_HEAD = "0017"

_floor = Table(
    FLOOR_TABLE,
    MetaData(),
    Column("version_num", String(32), primary_key=True),
)
CURRENT, EMPTY, OLDER, NEWER, INCOMPATIBLE = "current", "empty", "older", "newer", "incompatible"


class IncompatibleSchema(Exception):
    """The schema was migrated by a newer release this one cannot run on (one line)."""


@dataclass(frozen=True)
class Schema:
    """What a database's schema is: its revision and its floor (None: empty)."""

    revision: str | None
    floor: str | None
    legacy: bool = False  # only alembic_version: last migrated by a release up to LEGACY_HEAD

    def state(self) -> str:
        """CURRENT, EMPTY, OLDER (run initdb), NEWER (a newer release's, compatible) or
        INCOMPATIBLE, for this release."""
        script = _script()
        head = script.get_current_head()
        if self.revision is None:
            return EMPTY
        if self.revision == head:
            return CURRENT
        if self.legacy or _known(script, self.revision):
            return OLDER  # a release up to LEGACY_HEAD wrote no revision newer than ours
        if self.floor is not None and self.floor in ancestry(head):
            return NEWER
        return INCOMPATIBLE

    def problem(self) -> str | None:
        """The one-line message for the operator when this release must not run here."""
        head = head_revision()
        state = self.state()
        if state == OLDER:
            return (
                f"database schema is at revision {self.revision}, this version needs {head}: "
                "run `pbxcontrol initdb` to upgrade"
            )
        if state == INCOMPATIBLE:
            return (
                f"database schema is at revision {self.revision}, migrated by a newer release "
                f"that this one (schema {head}) cannot run on (it needs at least "
                f"{self.floor}): upgrade pbxcontrol"
            )
        return None


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic: "Can't locate revision"
        return False


def ancestry(revision: str | None) -> list[str]:
    """`revision` and every revision before it, newest first."""
    if revision is None:
        return []
    return [r.revision for r in _script().walk_revisions(base="base", head=revision)]


def additive(module: object, dialect: str) -> bool:
    """Whether a migration is additive on the engine `dialect` (its `additive`: a bool, or a
    dict by engine when only one of them keeps older releases working)."""
    said = getattr(module, "additive", False)
    return bool(said.get(dialect, False)) if isinstance(said, dict) else said is True


def floor_of(revision: str | None, dialect: str) -> str | None:
    """The newest revision up to `revision` that is not additive on `dialect`, or that a
    release without the floor has as its head (up to LEGACY_HEAD: they need it exactly)."""
    legacy = set(ancestry(LEGACY_HEAD))
    script = _script()
    for rev in script.walk_revisions(base="base", head=revision or "heads"):
        if rev.revision in legacy or not additive(rev.module, dialect):
            return rev.revision
    return None


def head_revision() -> str | None:
    return _script().get_current_head()


def read(conn: Connection) -> Schema:
    tables = set(inspect(conn).get_table_names())
    floor = None
    if FLOOR_TABLE in tables:
        floor = conn.execute(text(f"SELECT version_num FROM {FLOOR_TABLE}")).scalar()
    if VERSION_TABLE in tables:
        revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        return Schema(revision, floor)
    return Schema(floor, floor, legacy=floor is not None)


def schema(engine: Engine) -> Schema:
    with engine.connect() as conn:
        return read(conn)


def current_revision(engine: Engine) -> str | None:
    return schema(engine).revision


def is_current(engine: Engine) -> bool:
    return schema(engine).state() == CURRENT


def upgrade(engine: Engine, revision: str = "head") -> tuple[Schema, Schema]:
    """Migrate to `revision` under the lock: (the schema before, after). A schema a newer
    release migrated is left alone when this release may run on it (IncompatibleSchema
    otherwise)."""
    with _migrating(engine) as conn:
        before = read(conn)
        if before.state() in (NEWER, INCOMPATIBLE):
            if before.state() == INCOMPATIBLE:
                raise IncompatibleSchema(before.problem())
            return before, before
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        if before.legacy and before.revision:  # migrated by a release up to LEGACY_HEAD
            command.stamp(cfg, before.revision)
        command.upgrade(cfg, revision)
        after = read(conn)
        _floor.create(conn, checkfirst=True)
        conn.execute(_floor.delete())
        floor = floor_of(after.revision, conn.dialect.name)
        conn.execute(_floor.insert().values(version_num=floor))
        return before, read(conn)


@contextlib.contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the migration lock."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield conn
        return
    with _file_lock(engine.url.database), engine.begin() as conn:
        yield conn


@contextlib.contextmanager
def _file_lock(path: str | None) -> Iterator[None]:
    """SQLite: an exclusive flock on the file DATABASE-initdb beside it. Not on the database
    file itself: closing any descriptor of a file drops every POSIX lock this process holds
    on it, SQLite's own included (those of the engine's pooled connections)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    try:
        fd = os.open(f"{path}-initdb", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # its directory not there (yet): as SQLite's SQLITE_CANTOPEN
        raise DatabaseUnavailable(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
