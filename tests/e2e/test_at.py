"""The board at a past moment from legs recorded off the sandbox Asterisk (SPEC §14), on both
engines: `at` while a real call rang lists its legs as the API listed them then, `at` while
it was up lists them up with their answer time, and `at` after its end lists neither."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from sandbox.sippctl import ARI_URL
from tests.databases import ENGINES
from tests.e2e.conftest import APP, show_log_if_failed
from tests.e2e.support import PbxServer, check_legs, converge, hang_up_and_check, of, wait_ari
from tests.e2e.test_calls import both_up

pytestmark = pytest.mark.e2e

KEPT = ("channel", "callid", "sip_callid", "start", "snumber", "cnumber", "dnumber")
KEPT += ("scustomer", "dcustomer", "direction", "stype", "dtype", "machine")


@pytest.fixture(scope="module", params=ENGINES)
def server(request, asterisk, databases, tmp_path_factory):
    """`pbxcontrol serve` recording the sandbox on a fresh database of each engine."""
    workdir = tmp_path_factory.mktemp(f"at-{request.param}")
    with databases.fresh(request.param, workdir) as url:
        server = PbxServer(workdir / "serve", ARI_URL, f"{APP}-at-{request.param}", db_url=url)
        server.provision()
        try:
            server.start()
            yield server
        finally:
            status = server.stop()
    assert status == 0, f"pbxcontrol serve exited with {status} on SIGTERM:\n{server.tail()}"


@pytest.fixture
def idle(asterisk, server, request):
    converge(server, asterisk, 10)
    yield asterisk
    show_log_if_failed(request, server)


def board(server: PbxServer, at: float | str, user: str = "acme", **params) -> dict[str, dict]:
    return {r["uniqueid"]: r for r in server.list(user, at=at, **params) or []}


def test_at_during_a_real_call_is_its_state_then_and_after_its_end_nothing(idle, server, sipp):
    ari = idle
    alice = sipp.phone_answers("alice", ring_ms=3000)
    sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    wait_ari(ari, "alice ringing", lambda ch: of(ch, "PJSIP/alice", "Ringing"))
    ringing = check_legs(server, ari)  # what the live list showed while alice rang
    ringing_at = time.time()
    wait_ari(ari, "both legs up", both_up("PJSIP/alice", "PJSIP/trunk1"))
    up = check_legs(server, ari)
    up_at = time.time()
    ids = {row["uniqueid"] for row in up.values()}
    assert set(ringing) == set(up) == {"PJSIP/trunk1", "PJSIP/alice"}
    hang_up_and_check(server, ari, up["PJSIP/trunk1"]["uniqueid"], ids)
    alice.proc.wait(15)
    after = time.time()
    time.sleep(0.2)  # `at` must not be in the future
    # `answered` holds whole seconds: the moment asked about is a second before the answer.
    assert all(row["answered"] > ringing_at + 1 for row in up.values()), (ringing_at, up)

    then = board(server, f"{ringing_at:.3f}")
    assert set(then) == ids
    for key, live in ringing.items():
        row = then[live["uniqueid"]]
        assert (row["status"], row["answered"]) == (live["status"], 0), (key, row, live)
        assert {f: row[f] for f in KEPT} == {f: up[key][f] for f in KEPT}

    iso = datetime.fromtimestamp(up_at, UTC).isoformat()  # ISO 8601, as a person types it
    then = board(server, iso, "reseller", customer="recursive")
    assert set(then) & ids == ids
    for key, live in up.items():
        row = then[live["uniqueid"]]
        assert (row["status"], row["answered"]) == ("Up", live["answered"]), (key, row)

    assert set(board(server, f"{after:.3f}", "admin", customer="system")) & ids == set()
    assert board(server, f"{up_at:.3f}", "beta") == {}  # nor to another customer, ever
