"""Upgrades without downtime (SPEC §12): `initdb` on many hosts at once (one migrates, the
others wait and find the schema current), which schemas a release runs on (its own; a newer
one reached by additive migrations; not an older one: a one-line message naming initdb), and
every migration saying whether it is additive."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import make_url, text

from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine
from tests.conftest import cli, write_config

HEAD = migrate.head_revision()
LAST_BEFORE_THE_FLOOR = "0013"  # the last revision before migrations said whether additive


def errors(stderr: str) -> list[str]:
    """The command's error lines (other lines: warnings, e.g. about a file's mode)."""
    return [line for line in stderr.splitlines() if line.startswith("pbxcontrol: error:")]


def set_revisions(url: str, revision: str | None, floor: str | None) -> None:
    """Write the schema's revision and floor as a release (older or newer) would have."""
    engine = make_engine(url)
    with engine.begin() as conn:
        if revision is None:
            conn.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        else:
            conn.execute(
                text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = :r"), {"r": revision}
            )
        conn.execute(text(f"UPDATE {migrate.FLOOR_TABLE} SET version_num = :f"), {"f": floor})
    engine.dispose()


def migrated_to(url: str, revision: str) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine, revision)
    engine.dispose()


def floor(url: str) -> str | None:
    """This release's floor on the engine of `url`."""
    return migrate.floor_of(HEAD, make_url(url).get_backend_name())


def revisions(url: str) -> tuple[str, str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        found = tuple(
            conn.execute(text(f"SELECT version_num FROM {table}")).scalar_one()
            for table in (migrate.VERSION_TABLE, migrate.FLOOR_TABLE)
        )
    engine.dispose()
    return found  # type: ignore[return-value]


def test_every_migration_after_0013_says_whether_it_is_additive():
    script = migrate._script()
    later = [
        rev
        for rev in script.walk_revisions()
        if rev.revision > LAST_BEFORE_THE_FLOOR  # revisions are zero-padded numbers
    ]
    assert later, "no migration after 0013: the check checks nothing"
    for rev in later:
        said = getattr(rev.module, "additive", None)
        by_engine = isinstance(said, dict) and set(said) == {"sqlite", "postgresql"}
        assert isinstance(said, bool) or by_engine, (
            f"migration {rev.revision} must say `additive = True` (older releases keep "
            "running on its schema), `additive = False`, or a dict of both engines: see "
            "pbxcontrol/db/migrate.py"
        )


def test_the_floor_is_the_newest_revision_that_is_not_additive():
    for engine in ("sqlite", "postgresql"):
        # Up to LEGACY_HEAD the releases compare alembic_version with their head: exactly.
        assert migrate.floor_of("0013", engine) == "0013"
        assert migrate.floor_of("0015", engine) == "0015"
        assert migrate.floor_of("0005", engine) == "0005"
        assert migrate.floor_of(migrate.LEGACY_HEAD, engine) == migrate.LEGACY_HEAD
        # After it, additive migrations keep the floor: the release before this one runs.
        assert migrate.floor_of("0018", engine) == migrate.LEGACY_HEAD
    # 0016 moved the journal's ids to a sequence on PostgreSQL; on SQLite it added an index.
    script = migrate._script()
    module = script.get_revision("0016").module
    assert not migrate.additive(module, "postgresql")
    assert migrate.additive(module, "sqlite")
    assert migrate.additive(script.get_revision("0018").module, "postgresql")


def test_initdb_on_many_hosts_at_once_migrates_once(tmp_path, empty_db_url):
    """Four `initdb` at once on an empty database: every one succeeds, one creates the schema,
    the others wait for it and find it current."""
    config = write_config(tmp_path, db=empty_db_url)
    command = [sys.executable, "-m", "pbxcontrol", "--config", str(config), "initdb"]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    done = [(p.wait(120), *p.communicate()) for p in procs]
    assert [status for status, _out, _err in done] == [0, 0, 0, 0], done
    outs = [out for _status, out, _err in done]
    assert sum("upgraded from empty" in out for out in outs) == 1, outs
    assert sum("up to date" in out for out in outs) == 3, outs
    assert revisions(empty_db_url) == (HEAD, floor(empty_db_url))


def test_a_database_of_a_release_before_the_floor_is_upgraded_by_initdb(tmp_path, empty_db_url):
    """Migrated by a release up to 0013 (only alembic_version, at 0013): this release refuses
    it until `initdb`, which moves the revision over and writes the floor."""
    db_url = empty_db_url
    migrated_to(db_url, LAST_BEFORE_THE_FLOOR)
    set_revisions(db_url, None, LAST_BEFORE_THE_FLOOR)
    config = write_config(tmp_path, db=db_url)
    refused = cli(config, "api")
    assert refused.returncode == 2
    [line] = errors(refused.stderr)
    assert f"revision 0013, this version needs {HEAD}" in line
    assert "run `pbxcontrol initdb`" in line
    done = cli(config, "initdb")
    assert done.returncode == 0, done.stderr
    assert f"upgraded from 0013 to revision {HEAD}" in done.stdout
    assert revisions(db_url) == (HEAD, floor(db_url))


def test_an_older_schema_is_refused_in_one_line_naming_initdb(tmp_path, empty_db_url):
    migrated_to(empty_db_url, "0012")
    done = cli(write_config(tmp_path, db=empty_db_url), "record")
    assert done.returncode == 2
    assert errors(done.stderr) == [
        f"pbxcontrol: error: database schema is at revision 0012, this version needs {HEAD}: "
        "run `pbxcontrol initdb` to upgrade"
    ]


def test_a_newer_schema_reached_by_additive_migrations_is_served(tmp_path, db_url):
    """A newer release migrated to a revision this one does not know, additively since our
    head (the floor): this release serves on it, and its initdb leaves it alone."""
    set_revisions(db_url, "9999", HEAD)
    config = write_config(tmp_path, db=db_url)
    done = cli(config, "initdb")
    assert done.returncode == 0, done.stderr
    assert "revision 9999, newer than this release's" in done.stdout
    assert "nothing to do" in done.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "api"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = _wait_for_line(proc, "listening on http://")
        assert f"database schema 9999 is newer than this release's ({HEAD})" in seen
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert revisions(db_url) == ("9999", HEAD)


def test_a_newer_schema_past_a_breaking_migration_is_refused(tmp_path, db_url):
    set_revisions(db_url, "9999", "9998")  # 9998: a migration this release cannot run on
    config = write_config(tmp_path, db=db_url)
    for command in ("api", "initdb"):
        done = cli(config, command)
        assert done.returncode == 2, (command, done.stderr)
        [line] = errors(done.stderr)
        assert "migrated by a newer release" in line and "needs at least 9998" in line, line
        assert "upgrade pbxcontrol" in line


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 30) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before {needle!r}:\n{seen}")
        seen += line
        assert time.monotonic() < deadline, seen
    return seen
