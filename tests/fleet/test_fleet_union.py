"""A small fleet on PostgreSQL (SPEC §10, issue 21), no Asterisk needed: five stand-in Asterisk
machines (bench/fleetari.py: real recorded calls, ids unique per machine and copy, GET /channels
always what they have sent), a real `pbxcontrol record` per machine and a standby for the
first, two `pbxcontrol api`, the database reached through a proxy the test can cut.

After a burst (every machine's backlog at once) both APIs list exactly the union of the
machines' channels, every field as the recorder's own code derives it from the complete
stream, and no recorder reopened its websocket; after a database outage under traffic both list
the union again (reconnect and reconcile).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url

from bench import fleetfloor
from bench.fleetrun import Fleet
from tests.databases import password_url
from tests.e2e.proxy import CuttableProxy

pytestmark = pytest.mark.slow  # PostgreSQL and nine processes: about 40 s

MACHINES, COPIES, KEEP = 5, 10, 3  # 120 legs per machine at the peak, 36 left up
OUTAGE = 8.0


@pytest.fixture(scope="module")
def fleet(databases, tmp_path_factory) -> Iterator[tuple[Fleet, CuttableProxy]]:
    tmp = tmp_path_factory.mktemp("fleet")
    with databases.fresh("postgresql", tmp, empty=True) as url:
        direct = make_url(password_url(url))
        proxy = CuttableProxy((direct.host or "127.0.0.1", direct.port or 5432))
        through = password_url(direct.set(host="127.0.0.1", port=proxy.port))
        running = Fleet(
            tmp, through, MACHINES, copies=COPIES, keep=KEEP, subscribers=0,
            direct=password_url(direct),
        )  # fmt: skip
        try:
            running.start()
            yield running, proxy
        finally:
            running.stop()
            proxy.close()


def test_after_a_burst_every_api_lists_the_union_field_by_field(fleet):
    running, _ = fleet
    expected, _ = fleetfloor.reference(MACHINES, COPIES, KEEP)
    for part in ("burst", "teardown"):
        running.stand_ins.tell(part, "burst-done")
        union = running.stand_ins.channels()
        running.converge(union, 30)
    assert len(union) == MACHINES * KEEP * 12
    for api in running.apis:
        assert fleetfloor.compare(running.rows(api), expected) == []
    assert running.reopens() == {p.name: 0 for p in running.recorders + running.standbys}


def test_after_a_database_outage_every_api_lists_the_union(fleet):
    running, proxy = fleet
    running.stand_ins.tell("busy 120 20 20 1")  # 20 calls a machine, new ones every second
    time.sleep(3)
    proxy.blocked.set()
    proxy.cut()
    time.sleep(OUTAGE)  # calls start and end meanwhile; nobody can write them
    proxy.blocked.clear()
    back = time.time()
    running.stand_ins.tell("halt", "busy-done")
    union = running.stand_ins.channels()
    assert len(union) > MACHINES * KEEP * 12
    recovered = running.converge(union, 45) - back
    print(f"\nboth APIs equal the union {recovered:.1f} s after the database came back")
