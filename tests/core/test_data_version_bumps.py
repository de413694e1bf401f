"""The data version moves with every committed change to the legs, once per transaction on
PostgreSQL (migration 0013), whatever the driver does with an executemany."""

from __future__ import annotations

from sqlalchemy import bindparam, text, update

from pbxcontrol.db.dataversion import data_version
from pbxcontrol.db.engine import make_engine
from pbxcontrol.db.models import LEGS_TABLE as LEGS


def test_a_batch_of_leg_writes_raises_the_version_once_on_postgresql(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(LEGS.insert(), [{"machine": 1, "uniqueid": f"u{i}"} for i in range(5)])
    with engine.connect() as conn:
        before = data_version(conn)
    with engine.begin() as conn:
        conn.execute(
            update(LEGS).where(LEGS.c.uniqueid == bindparam("b_uid")).values(status="Up"),
            [{"b_uid": f"u{i}"} for i in range(5)],
        )
    with engine.begin() as conn:  # a later transaction bumps again
        conn.execute(LEGS.delete().where(LEGS.c.uniqueid == "u0"))
    with engine.connect() as conn:
        after = data_version(conn)
    if engine.dialect.name == "postgresql":
        assert after == before + 2
    else:  # SQLite's row triggers: one per row
        assert after == before + 6
    engine.dispose()


def test_a_rolled_back_savepoint_does_not_swallow_the_next_bump(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        before = data_version(conn)
    with engine.begin() as conn:
        savepoint = conn.begin_nested()
        conn.execute(LEGS.insert().values(machine=1, uniqueid="undone"))
        savepoint.rollback()
        conn.execute(LEGS.insert().values(machine=1, uniqueid="kept"))
    with engine.connect() as conn:
        assert data_version(conn) > before
        count = conn.execute(text("SELECT count(*) FROM legs")).scalar()
    assert count == 1
    engine.dispose()
