"""Fresh databases for tests on SQLite and on the PostgreSQL of scripts/postgres-sandbox."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "postgres-sandbox"

#: The engines every SQL test runs on (the test ids say which: `test_x[postgresql]`).
ENGINES = ("sqlite", "postgresql")


def sandbox(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run scripts/postgres-sandbox with `args`, capturing its output."""
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def _sandbox_lock() -> Iterator[None]:
    """Held while starting or stopping the sandbox: one worker at a time (pytest-xdist)."""
    with SCRIPT.open("rb") as script:
        fcntl.flock(script, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(script, fcntl.LOCK_UN)


def password_url(url) -> str:
    """A URL as a string with its password (str() of a SQLAlchemy URL masks it)."""
    return make_url(url).render_as_string(hide_password=False)


def _migrations() -> tuple[int, ...]:
    """Changes when a migration file is added, removed or edited."""
    versions = migrate.MIGRATIONS / "versions"
    return tuple(sorted(p.stat().st_mtime_ns for p in versions.glob("*.py")))


class Databases:
    """Hands out one new database per caller, already at the head revision: a copy of a
    template migrated once per session (migrating each database would cost 0.2 s on
    PostgreSQL, and `CREATE DATABASE … TEMPLATE` takes 30 ms). Starts the PostgreSQL sandbox
    the first time a PostgreSQL database is asked for, and stops it at the end if it did."""

    def __init__(self, workdir: Path, run_dir: Path) -> None:
        self.workdir = workdir
        #: Shared by every worker of one pytest run (pytest-xdist): the run's mark that it
        #: started the sandbox, so the last worker to finish stops it, whichever started it.
        self.started_mark = run_dir / "postgres-sandbox-started"
        self.session = uuid.uuid4().hex[:12]
        self._admin: Engine | None = None
        self._failure: str | None = None
        self._templates: dict[str, tuple[str, tuple[int, ...]]] = {}

    # -- PostgreSQL --
    def admin(self) -> Engine:
        """An AUTOCOMMIT engine on the server's `postgres` database (CREATE/DROP DATABASE)."""
        if self._failure:
            pytest.fail(self._failure, pytrace=False)
        if self._admin is None:
            with _sandbox_lock():  # workers of one run (pytest-xdist) start it once
                if sandbox("status").returncode != 0:
                    up = sandbox("up")
                    if up.returncode != 0:
                        self._failure = (
                            "scripts/postgres-sandbox up failed; the tests on PostgreSQL need "
                            "the server it starts (Debian's `postgresql` package, installed "
                            "with apt-get when missing; run it as root to see why):\n"
                            f"{up.stderr.strip()}\n{up.stdout.strip()}"
                        )
                        pytest.fail(self._failure, pytrace=False)
                    self.started_mark.touch()
            url = sandbox("url").stdout.strip()
            self._admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        return self._admin

    def _pg_url(self, name: str) -> str:
        return password_url(self.admin().url.set(database=name))

    def _pg_create(self, name: str, template: str | None) -> str:
        # FILE_COPY: with fsync off, copying the template's files beats WAL-logging each block.
        clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        with self.admin().connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}{clause}"))
        return self._pg_url(name)

    def _pg_drop(self, name: str) -> None:
        # FORCE: a test that failed may have left a connection (or a server process) behind.
        with self.admin().connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    # -- both engines --
    def _template(self, engine: str) -> str:
        """The name (PostgreSQL) or file (SQLite) of this session's migrated template, made
        again when a migration was added or changed since (while a long run goes on)."""
        migrations = _migrations()
        if engine in self._templates and self._templates[engine][1] != migrations:
            old = self._templates.pop(engine)[0]
            if engine == "postgresql":
                self._pg_drop(old)
        if engine not in self._templates:
            serial = f"{self.session}_{len(migrations)}_{uuid.uuid4().hex[:6]}"
            if engine == "postgresql":
                name = f"tpl_{serial}"
                url = self._pg_create(name, None)
            else:
                name = str(self.workdir / f"template_{serial}.db")
                url = f"sqlite:///{name}"
            migrated = make_engine(url, poolclass=NullPool)
            try:
                migrate.upgrade(migrated)
                if engine == "sqlite":  # everything into the file that is copied
                    with migrated.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except BaseException:
                migrated.dispose()
                if engine == "postgresql":
                    self._pg_drop(name)
                raise
            migrated.dispose()
            self._templates[engine] = (name, migrations)
        return self._templates[engine][0]

    @contextmanager
    def fresh(self, engine: str, directory: Path, *, empty: bool = False) -> Iterator[str]:
        """The URL of a new database (schema at head unless `empty`), dropped afterwards.
        A SQLite database is the file pbx.db in `directory`."""
        assert engine in ENGINES, engine
        if engine == "sqlite":
            path = directory / "pbx.db"
            if not empty:
                shutil.copyfile(self._template(engine), path)
                path.chmod(0o600)  # as the service creates it (umask 077): no warning
            yield f"sqlite:///{path}"
            return
        template = None if empty else self._template(engine)
        name = f"t_{self.session}_{uuid.uuid4().hex[:12]}"
        url = self._pg_create(name, template)
        try:
            yield url
        finally:
            self._pg_drop(name)

    def close(self) -> None:
        if self._admin is None:
            return
        if "postgresql" in self._templates:
            self._pg_drop(self._templates["postgresql"][0])
        with _sandbox_lock():
            others = self._others()
            self._admin.dispose()
            if self.started_mark.exists() and not others:
                sandbox("down")
                self.started_mark.unlink()

    def _others(self) -> list[str]:
        """Databases of other test sessions still running on the server (then it stays up)."""
        with self.admin().connect() as conn:
            names = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname ~ '^(t|tpl)_'")
            ).scalars()
            return [n for n in names if self.session not in n]
