"""A real `pbxcontrol serve` on PostgreSQL records real SIP calls: the system view equals
Asterisk's `GET /channels` (the scenarios of test_calls.py, on the harness's PostgreSQL)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from pbxcontrol.db.models import LEG_HISTORY_TABLE
from sandbox.sippctl import ARI_URL
from tests.e2e import test_calls as calls
from tests.e2e.conftest import APP, show_log_if_failed
from tests.e2e.support import PbxServer, converge, hang_up_ours

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pg(databases, tmp_path_factory):
    """An empty PostgreSQL database: `pbxcontrol initdb` creates the schema as on a new host."""
    with databases.fresh("postgresql", tmp_path_factory.mktemp("pg"), empty=True) as url:
        yield url


@pytest.fixture(scope="module")
def pbx_pg(asterisk, pg, tmp_path_factory):
    """`pbxcontrol serve` on that database, under its own ARI application name."""
    server = PbxServer(tmp_path_factory.mktemp("serve-pg"), ARI_URL, f"{APP}-pg", db_url=pg)
    server.provision()
    try:
        server.start()
        yield server
    finally:
        status = server.stop()
    assert status == 0, f"pbxcontrol serve exited with {status} on SIGTERM:\n{server.tail()}"


@pytest.fixture
def idle_pg(asterisk, pbx_pg, request):
    """Start from a system view equal to Asterisk's channels."""
    hang_up_ours(asterisk)
    time.sleep(0.2)
    converge(pbx_pg, asterisk, 10)
    yield asterisk
    show_log_if_failed(request, pbx_pg)


def test_inbound_trunk_call_to_alice_on_postgresql(idle_pg, pbx_pg, sipp):
    calls.test_inbound_trunk_call_to_alice_rings_then_is_answered(idle_pg, pbx_pg, sipp)


def test_internal_call_alice_to_bob_on_postgresql(idle_pg, pbx_pg, sipp):
    calls.test_internal_call_alice_to_bob(idle_pg, pbx_pg, sipp)


def test_ended_legs_are_in_the_postgresql_history(idle_pg, pbx_pg, pg):
    """The legs of both calls went through PostgreSQL: they are in its history table."""
    engine = create_engine(pg, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            channels = conn.execute(select(LEG_HISTORY_TABLE.c.channel)).scalars().all()
    finally:
        engine.dispose()
    for endpoint in ("PJSIP/trunk1-", "PJSIP/alice-", "PJSIP/bob-"):
        assert any(c.startswith(endpoint) for c in channels), (endpoint, channels)
