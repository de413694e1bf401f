"""Rows are serialised by the database: without its JSON functions the plugin refuses to
start, with a clear line, instead of failing every request."""

from __future__ import annotations

import pytest
from pbxcontrol.plugins.active_calls import sqlterms
from sqlalchemy import create_engine, event


def test_a_database_without_json_functions_is_refused_at_start_up():
    # SQLite only: it stands for a database without the functions by replacing SQLite's
    # json_object with a failing user function (PostgreSQL has had json_build_object since 9.4).
    engine = create_engine("sqlite://")

    @event.listens_for(engine, "connect")
    def no_json(dbapi_conn, _record):
        def missing(*_args):
            raise RuntimeError("no such function: json_object")

        dbapi_conn.create_function("json_object", -1, missing)

    with engine.connect() as conn, pytest.raises(ValueError, match="has no JSON functions"):
        sqlterms.check_json_support(conn)


def test_the_database_here_has_them(db_url):
    engine = create_engine(db_url)
    with engine.connect() as conn:
        sqlterms.check_json_support(conn)
    engine.dispose()
