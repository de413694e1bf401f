"""`pbxcontrol backup FILE`: a consistent copy of a SQLite database while the service runs.

SQLite's online backup API copies the pages of one read transaction: in WAL mode readers do
not block the recorder's writes (they go to the WAL meanwhile), and the copy is the database
as one commit left it. PostgreSQL has its own tools: the command refuses and says which.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from pbxcontrol.config import Config
from pbxcontrol.db.engine import SQLITE_BUSY_TIMEOUT_MS
from pbxcontrol.ops import OpsError

PG_DUMP = """\
backup copies SQLite databases; this one is {dialect}: use its own tools, e.g.
  pg_dump --format=custom --file={file} '{url}'
and to restore it into an empty database (then `pbxcontrol initdb`):
  pg_restore --no-owner --dbname='{url}' {file}
(the password from PGPASSWORD or ~/.pgpass; docs/operating.md, Backup)"""


def backup(config: Config, target: str) -> str:
    """Copy the configured SQLite database to `target` (mode 0600, replaced atomically);
    what was done, for the operator."""
    scheme = config.database_url.partition(":")[0]
    if scheme.partition("+")[0] != "sqlite":
        dialect, plain = libpq(config.database_url)
        raise OpsError(PG_DUMP.format(dialect=dialect, file=target, url=plain))
    path = make_url(config.database_url).database
    source = Path(path or "")
    if not path or path == ":memory:" or not source.is_file():
        raise OpsError(f"no SQLite database at {path or '(in memory)'!r} to back up")
    dest = Path(target)
    if dest.is_dir():
        raise OpsError(f"{target}: is a directory; name the file to write")
    if dest.resolve() == source.resolve():
        raise OpsError(f"{target}: is the database itself")
    started = time.monotonic()
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        copy(source, partial)
        os.replace(partial, dest)
    except OSError as exc:
        raise OpsError(f"{target}: cannot write: {exc.strerror}") from None
    except sqlite3.Error as exc:
        raise OpsError(f"backup of {source} failed: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    _sync_directory(dest.parent)
    size = dest.stat().st_size / 1e6
    return f"backed up {source} to {target} ({size:.1f} MB in {time.monotonic() - started:.1f} s)"


def copy(source: Path, dest: Path) -> None:
    """Source's pages, in one read transaction, into a new file `dest` made 0600 before any
    byte is written; flushed to disk."""
    os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        src.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        out = sqlite3.connect(dest)
        try:
            # pages=-1 (all in one step): one read transaction, so one consistent state even
            # while the recorder commits (a copy in steps restarts on each of its commits).
            src.backup(out)
            # The copy keeps the source's WAL mode; a restore is one file, with nothing pending.
            out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()
    finally:
        src.close()
    fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def libpq(url: str) -> tuple[str, str]:
    """(the dialect, the database URL as libpq and pg_dump read it): no driver name, no
    password; several hosts (`host1:5432,host2:5432`) and libpq's query options kept."""
    scheme, _, rest = url.partition("://")
    dialect = scheme.partition("+")[0]
    authority, slash, path = rest.partition("/")
    user, at, hosts = authority.rpartition("@")
    if at:
        authority = f"{user.partition(':')[0]}@{hosts}"
    return dialect, f"{dialect}://{authority}{slash}{path}"


def _sync_directory(path: Path) -> None:
    """The rename itself reaches the disk (a crash right after must not lose the file)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
