"""Schema through Alembic: up from empty, re-run is a no-op, data survives an upgrade."""

from sqlalchemy import inspect, text

from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine
from pbxcontrol.db.models import Base
from tests.conftest import cli, write_config


def initdb(config):
    return cli(config, "initdb")


def test_initdb_creates_every_table_then_is_idempotent(tmp_path, empty_db_url):
    config = write_config(tmp_path, db=empty_db_url)
    first = initdb(config)
    assert first.returncode == 0, first.stderr
    assert "upgraded from empty" in first.stdout
    engine = make_engine(empty_db_url)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, max_calls) VALUES (1, 'kept', 0)"))
    second = initdb(config)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM customers")).scalar() == "kept"
        roles = conn.execute(text("SELECT count(*) FROM roles")).scalar()
    assert roles == 6  # seeded once, not again
    assert migrate.is_current(engine)
    engine.dispose()


def test_schema_matches_models(empty_db_url):
    """The migrations produce exactly what the models describe (no forgotten migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(empty_db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": migrate.VERSION_TABLE,
                # The compatibility floor, in Alembic's old version table (pbxcontrol.db.migrate).
                "include_name": lambda name, kind, _parent: name != migrate.FLOOR_TABLE,
            },
        )
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_serve_refuses_an_outdated_schema(tmp_path, empty_db_url):
    config = write_config(tmp_path, db=empty_db_url)
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0000')"))
    engine.dispose()
    proc = cli(config, "api")
    assert proc.returncode == 2
    assert "run `pbxcontrol initdb`" in proc.stderr


def test_counters_and_leg_ids_go_past_32_bits(db_url):
    """The data version, the journal and the ids of legs grow forever: past 2**31 (the end of
    PostgreSQL's INTEGER) a leg is still written, counted and given an id."""
    from pbxcontrol.db.dataversion import data_version
    from pbxcontrol.db.models import LEG_HISTORY_TABLE, LEGS_TABLE

    last = 2**31 - 1
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE counters SET value = :last"), {"last": last})
        for table in (LEGS_TABLE, LEG_HISTORY_TABLE):
            conn.execute(table.insert().values(id=last, machine=1, uniqueid="old"))
            if engine.dialect.name == "postgresql":  # an explicit id leaves the sequence alone
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last})")
                )
    with engine.begin() as conn:
        for table in (LEGS_TABLE, LEG_HISTORY_TABLE):
            new = conn.execute(
                table.insert().values(machine=1, uniqueid="new")
            ).inserted_primary_key
            assert new[0] == last + 1
        assert data_version(conn) > last
        bump = "UPDATE counters SET value = value + 1 WHERE name = 'journal' RETURNING value"
        assert conn.execute(text(bump)).scalar() == last + 1  # as the journal hands out ids
    engine.dispose()
