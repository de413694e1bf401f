"""A machine nobody records (SPEC §12) against the real Asterisk, on both engines: one
`pbxcontrol record` and one `pbxcontrol api` on one database, calls up. The recorder is killed
(kill -9) and no standby exists: the API's stream flags every leg `recorded: 0` within
2 x takeover_seconds + 1 s of the kill, /health is 503 naming the machine, the legs stay
listed (the calls are still up). A recorder started again reconciles: the legs are recorded
again and equal Asterisk's.

Measured: from the kill (this host's clock; the database runs here too) to the moment the
last leg of the machine reached a streaming client with `recorded: 0`.
"""

from __future__ import annotations

import signal
import time

import pytest
import requests

from sandbox.sippctl import ARI_URL
from tests.e2e.conftest import APP
from tests.e2e.support import converge, hang_up_ours
from tests.e2e.test_faults import calls_before
from tests.e2e.test_standby import TAKEOVER, ApiServer, Recorder, holding
from tests.plugins.active_calls.stream_support import Client, query

pytestmark = pytest.mark.e2e


@pytest.fixture
def site(asterisk, database, databases, tmp_path, request):
    """A provisioned database of the engine under test, the API and a factory of recorders."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    started: list[Recorder] = []
    hang_up_ours(asterisk)
    with databases.fresh(database, tmp_path, empty=True) as url:
        api = ApiServer(tmp_path / "api", ARI_URL, f"{APP}-standby", db_url=url)
        api.provision()
        api.start()
        engine = create_engine(url, poolclass=NullPool)

        def recorder(name: str) -> Recorder:
            rec = Recorder(tmp_path, name, url)
            started.append(rec)
            rec.start()
            return rec

        try:
            yield api, recorder, engine
        finally:
            for rec in started:
                rec.stop()
                if getattr(request.node, "e2e_failed", False):
                    print(f"--- {rec.name} ---\n{rec.text()[-4000:]}")
            if getattr(request.node, "e2e_failed", False):
                print(f"--- api ---\n{api.tail(80)}")
            api.stop()
            engine.dispose()
            hang_up_ours(asterisk)


def flagged(client: Client) -> bool:
    on_1 = [row for (machine, _), row in client.rows.items() if machine == 1]
    return bool(on_1) and all(row["recorded"] == 0 for row in on_1)


def test_kill_9_of_the_only_recorder_flags_its_legs_within_twice_the_takeover(site, asterisk, sipp):
    api, recorder, engine = site
    ari = asterisk
    first = recorder("a")
    holding(engine, first)
    calls_before(sipp, ari)
    converge(api, ari, 3)
    stream = Client(("127.0.0.1", api.port), query("admin", customer="system"))
    stream.read_until(lambda c: len(c.rows) >= 4)
    assert {row["recorded"] for row in stream.rows.values()} == {1}
    assert requests.get(f"http://127.0.0.1:{api.port}/health", timeout=5).status_code == 200

    fault_at = time.time()
    first.signal(signal.SIGKILL)
    stream.read_until(flagged, timeout=2 * TAKEOVER + 5)
    took = time.time() - fault_at
    print(f"\nDARK kill -9: {took:.2f} s from the kill to every leg flagged recorded 0")
    assert took <= 2 * TAKEOVER + 1
    health = requests.get(f"http://127.0.0.1:{api.port}/health", timeout=5)
    assert health.status_code == 503
    assert any(p.startswith("machine 1 is not recorded since") for p in health.json()["problems"])
    rows = api.list("admin", customer="system")
    assert rows and {row["recorded"] for row in rows} == {0}  # kept: the calls are up
    converge(api, ari, 1)  # and they are exactly Asterisk's

    again = recorder("b")  # a recorder comes back: it reconciles, the legs are recorded
    holding(engine, again, timeout=4 * TAKEOVER)
    stream.read_until(
        lambda c: {row["recorded"] for row in c.rows.values()} == {1}, timeout=2 * TAKEOVER
    )
    converge(api, ari, 3)
    assert requests.get(f"http://127.0.0.1:{api.port}/health", timeout=5).status_code == 200
    stream.close()
