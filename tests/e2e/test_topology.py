"""Two Asterisk machines, one PostgreSQL (SPEC §10, issue 14): per machine an active and a
standby `pbxcontrol record`, two `pbxcontrol api` processes. Every API process lists exactly
the union of both machines' `GET /channels` (same uniqueids and states, each leg with its
machine), tenants see their own legs on both machines, and after a `kill -9` of a machine's
active recorder its standby takes over within takeover_seconds.

Machine 1 is the sandbox Asterisk (`asterisk` fixture); machine 2 its second instance
(`scripts/asterisk-sandbox --instance 2`), started and stopped by this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.sippctl import (
    ARI2_URL,
    ARI_URL,
    Ari,
    SippPool,
    hang_up_parties,
    sandbox,
    sandbox_running,
)
from tests.e2e.conftest import APP
from tests.e2e.support import OURS, PROVISION, REPO, USERS, PbxServer, of, wait_ari

pytestmark = pytest.mark.e2e

TAKEOVER = 5.0  # [recorder] takeover_seconds (the default, written out)
RECORDER = f"[recorder]\ntakeover_seconds = {TAKEOVER:g}\n"
PROVISION2 = REPO / "sandbox" / "provision2.json"  # machine 2's lines, trunk and numbers
ACTIVE, STANDBY = "recording (epoch", "standby, holder"

Key = tuple[int, str]  # (machine, uniqueid): how pbxcontrol keys a leg


@dataclass
class Fleet:
    aris: dict[int, Ari]
    recorders: dict[int, list[PbxServer]]  # machine -> [active, standby]
    apis: list[PbxServer]

    def processes(self) -> list[PbxServer]:
        return [*(r for pair in self.recorders.values() for r in pair), *self.apis]

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.workdir.name} ---\n{p.tail(lines)}" for p in self.processes())


@pytest.fixture(scope="module")
def asterisk2(asterisk) -> Iterator[Ari]:
    """Machine 2: the sandbox's second Asterisk, started if needed (and then stopped)."""
    started = False
    if not sandbox_running(2):
        up = sandbox("--instance", "2", "up")
        if up.returncode != 0:
            pytest.fail(
                f"scripts/asterisk-sandbox --instance 2 up failed:\n{up.stderr.strip()}",
                pytrace=False,
            )
        started = True
    ari = Ari(ARI2_URL)
    assert ari.answers(), f"the second instance runs but ARI does not answer at {ARI2_URL}"
    hang_up_parties(ari)
    try:
        yield ari
    finally:
        hang_up_parties(ari)
        if started:
            down = sandbox("--instance", "2", "down")
            assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def fleet(asterisk, asterisk2, databases, tmp_path_factory) -> Iterator[Fleet]:
    """initdb + provision once on a new PostgreSQL database, then the six processes."""
    tmp = tmp_path_factory.mktemp("topology")
    machines = {1: (ARI_URL, f"{APP}-topo-1"), 2: (ARI2_URL, f"{APP}-topo-2")}
    with databases.fresh("postgresql", tmp, empty=True) as url:

        def server(name: str, command: str, mids: tuple[int, ...]) -> PbxServer:
            mine = {m: machines[m] for m in mids}
            return PbxServer(
                tmp / name, "", "", url, command=command, machines=mine, extra=RECORDER
            )

        apis = [server(f"api-{n}", "api", (1, 2)) for n in "ab"]
        recorders = {m: [server(f"record-{m}{n}", "record", (m,)) for n in "ab"] for m in (1, 2)}
        apis[0].cli("initdb")
        apis[0].cli("provision", str(PROVISION))
        apis[0].cli("provision", str(PROVISION2))
        result = Fleet({1: asterisk, 2: asterisk2}, recorders, apis)
        try:
            started = time.monotonic()
            for pair in recorders.values():
                pair[0].start(ready=ACTIVE)
            for pair in recorders.values():
                pair[1].start(ready=STANDBY)
            for api in apis:
                api.start()
            print(f"\nsix processes up in {time.monotonic() - started:.1f} s")
            yield result
        finally:
            statuses = [(p, p.stop()) for p in result.processes()]
            failed = [f"{p.workdir.name}: {s}\n{p.tail()}" for p, s in statuses if s != 0]
            assert not failed, "not exit 0 on SIGTERM:\n" + "\n".join(failed)


@pytest.fixture
def sipp2(asterisk2, tmp_path, request) -> Iterator[SippPool]:
    """sipp parties of machine 2 (its carrier and phones on 127.0.0.13-17)."""
    pool = SippPool(tmp_path / "sipp2", tag=f"topo-{request.node.name[-16:]}", machine=2)
    try:
        yield pool
    finally:
        hang_up_parties(asterisk2)  # while sipp still answers Asterisk's BYEs
        pool.stop()


@pytest.fixture
def calm(fleet, request) -> Iterator[Fleet]:
    """Start from no party calls and every API equal to the union; logs on failure."""
    for ari in fleet.aris.values():
        hang_up_parties(ari)
    union_everywhere(fleet, 10)
    yield fleet
    if getattr(request.node, "e2e_failed", False):
        print(fleet.logs(80))


def union(fleet: Fleet) -> dict[Key, dict[str, Any]]:
    return {(m, c["id"]): c for m, ari in fleet.aris.items() for c in ari.channels()}


def listed(api: PbxServer, user: str = "admin", **params: Any) -> dict[Key, dict[str, Any]]:
    """What `user` sees (admin: the system view), by (machine, uniqueid)."""
    if user == "admin" and not params:
        params = {"customer": "system"}
    return {(r["machine"], r["uniqueid"]): r for r in api.list(user, **params) or []}


def pid(process: PbxServer) -> int:
    assert process.proc is not None
    return process.proc.pid


def same(view: dict[Key, dict[str, Any]], ast: dict[Key, dict[str, Any]]) -> bool:
    """The same legs, each in the state its Asterisk reports."""
    return view.keys() == ast.keys() and all(view[k]["status"] == ast[k]["state"] for k in ast)


def union_everywhere(fleet: Fleet, timeout: float) -> float:
    """Seconds until every API's system view is exactly the union of both machines'
    GET /channels: same (machine, uniqueid) keys, each in the state its Asterisk reports."""
    start = time.monotonic()
    while True:
        before = union(fleet)
        views = [listed(api) for api in fleet.apis]
        after = union(fleet)

        if before.keys() == after.keys() and all(same(v, after) for v in views):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            lines = []
            for api, view in zip(fleet.apis, views, strict=True):
                lines.append(
                    f"{api.workdir.name}: only in API {sorted(view.keys() - after.keys())}; "
                    f"only in Asterisk {sorted(after.keys() - view.keys())}; state differs "
                    + str(
                        [
                            (k, view[k]["status"], after[k]["state"])
                            for k in view.keys() & after.keys()
                            if view[k]["status"] != after[k]["state"]
                        ]
                    )
                )
            raise AssertionError(
                f"an API != the union after {timeout} s\n" + "\n".join(lines) + fleet.logs()
            )
        time.sleep(0.05)


def both_up(a: str, b: str):
    return lambda ch: len(of(ch, a, "Up")) == 1 and len(of(ch, b, "Up")) == 1


def legs_of(fleet: Fleet, machine: int, *endpoints: str) -> set[Key]:
    chans = fleet.aris[machine].channels()
    return {(machine, c["id"]) for e in endpoints for c in of(chans, e)}


def health(api: PbxServer) -> tuple[int, dict[str, Any]]:
    resp = api.http.get(f"http://127.0.0.1:{api.port}/health", timeout=5)
    return resp.status_code, resp.json()


def holder_pid(api: PbxServer, machine: int) -> int | None:
    """The pid in /health's holder ("host:pid") of `machine`, None while nobody holds it."""
    holder = health(api)[1]["machines"][str(machine)]["holder"]
    return int(holder.rsplit(":", 1)[1]) if holder else None


def hang_up_call(api: PbxServer, user: str, **params: str) -> str:
    """calls/hangup as `user`; the envelope's code."""
    query = {"auth_username": user, "auth_password": USERS[user], **params}
    url = f"http://127.0.0.1:{api.port}/api/json/calls/hangup/"
    return api.http.get(url, params=query, timeout=10).json()["responses"][0]["code"]


def test_every_api_lists_the_union_of_both_machines(calm, sipp, sipp2):
    fleet = calm
    ari1, ari2 = fleet.aris[1], fleet.aris[2]
    # Machine 1: the carrier calls Acme's alice, Beta's carol calls dave.
    sipp.phone_answers("alice", ring_ms=500, media_port=6100)
    sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    sipp.phone_answers("dave", ring_ms=500, media_port=6110)
    sipp.phone_calls("carol", "2002", media_port=6010)
    # Machine 2: the carrier calls Beta's grace, Acme's erin calls frank.
    sipp2.phone_answers("grace", ring_ms=500, media_port=6120)
    sipp2.carrier_calls("0202226666", "0201239876", "Supplier", media_port=6310)
    sipp2.phone_answers("frank", ring_ms=500, media_port=6130)
    sipp2.phone_calls("erin", "1012", media_port=6020)
    started = time.monotonic()
    wait_ari(ari1, "machine 1's calls up", both_up("PJSIP/alice", "PJSIP/dave"))
    wait_ari(ari2, "machine 2's calls up", both_up("PJSIP/grace", "PJSIP/frank"))
    wait_ari(ari1, "machine 1's callers up", both_up("PJSIP/trunk1", "PJSIP/carol"))
    wait_ari(ari2, "machine 2's callers up", both_up("PJSIP/trunk2", "PJSIP/erin"))
    took = union_everywhere(fleet, 3)
    print(
        f"\nfour calls up on two machines in {time.monotonic() - started:.1f} s; "
        f"every API equal to the union {took * 1000:.0f} ms later"
    )

    ast = union(fleet)
    acme = legs_of(fleet, 1, "PJSIP/trunk1", "PJSIP/alice") | legs_of(
        fleet, 2, "PJSIP/erin", "PJSIP/frank"
    )
    beta = legs_of(fleet, 1, "PJSIP/carol", "PJSIP/dave") | legs_of(
        fleet, 2, "PJSIP/trunk2", "PJSIP/grace"
    )
    assert len(acme) == len(beta) == 4 and {k[0] for k in acme} == {k[0] for k in beta} == {1, 2}
    assert acme | beta <= ast.keys()
    for api in fleet.apis:
        rows = listed(api)
        for key, row in rows.items():
            assert row["channel"] == ast[key]["name"], (api.workdir.name, row)
            assert row["uniqueid"] == ast[key]["id"]
        # The tenants' views span both machines and hold nothing of the other tenant.
        assert listed(api, "acme").keys() & (acme | beta) == acme, api.workdir.name
        assert listed(api, "beta").keys() & (acme | beta) == beta, api.workdir.name
        reseller = listed(api, "reseller", customer="recursive").keys()
        assert reseller & (acme | beta) == acme | beta
        # Machine 2's inbound call: its own trunk (peer 2's ingroup), Beta's DID and phone.
        (grace,) = legs_of(fleet, 2, "PJSIP/grace")
        (trunk2,) = legs_of(fleet, 2, "PJSIP/trunk2")
        for key in (grace, trunk2):
            row = rows[key]
            assert row["machine"] == 2
            assert (row["stype"], row["snumber"], row["scustomer"]) == ("external", "0201239876", 4)
            assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "2011", 4)
            assert (row["direction"], row["ingroup"], row["answered"] > 0) == ("in", 11, True)
        assert rows[grace]["callid"] == rows[trunk2]["callid"] == trunk2[1]
        # /health: both machines recorded, each by its active recorder.
        status, body = health(api)
        assert status == 200, body
        for m, (active, _) in fleet.recorders.items():
            assert body["machines"][str(m)]["recording"] is True
            assert holder_pid(api, m) == pid(active)

    # calls/hangup reaches machine 2 from any API process: Acme may end erin's call (by its
    # callid, found on machine 2), Beta may not see it.
    api = fleet.apis[1]
    (erin,) = legs_of(fleet, 2, "PJSIP/erin")
    callid = listed(api)[erin]["callid"]
    assert hang_up_call(api, "beta", callid=callid) == "404"
    assert hang_up_call(api, "acme", callid=callid) == "204"
    wait_ari(
        ari2, "erin's call ended", lambda ch: not (of(ch, "PJSIP/erin") or of(ch, "PJSIP/frank"))
    )
    union_everywhere(fleet, 1)

    for ari in (ari1, ari2):
        hang_up_parties(ari)
    took = union_everywhere(fleet, 3)
    assert not any(OURS.match(c["name"]) for c in union(fleet).values())
    print(f"after the hangups every API equal to the union again in {took * 1000:.0f} ms")


def test_kill_9_of_an_active_recorder_its_standby_takes_over(calm, sipp, sipp2):
    fleet = calm
    ari1, ari2 = fleet.aris[1], fleet.aris[2]
    sipp.phone_answers("bob", ring_ms=300, media_port=6100)
    sipp.phone_calls("alice", "1002", media_port=6000)
    sipp2.phone_answers("frank", ring_ms=300, media_port=6130)
    sipp2.phone_calls("erin", "1012", media_port=6020)
    wait_ari(ari1, "alice -> bob up", both_up("PJSIP/alice", "PJSIP/bob"))
    wait_ari(ari2, "erin -> frank up", both_up("PJSIP/erin", "PJSIP/frank"))
    union_everywhere(fleet, 3)

    active, standby = fleet.recorders[2]
    assert "websocket connected" not in standby.log.read_text()  # a standby stays off ARI
    fault = time.monotonic()
    active.kill9()
    # Machine 2 changes while nobody records it: erin's call ends, the carrier calls grace.
    ari2.hangup(of(ari2.channels(), "PJSIP/erin")[0]["id"])
    sipp2.phone_answers("grace", ring_ms=300, media_port=6120)
    sipp2.carrier_calls("0202226666", "0201239876", "Supplier", media_port=6310)
    wait_ari(ari2, "the carrier -> grace up", both_up("PJSIP/trunk2", "PJSIP/grace"))
    # The standby's log says when it recorded again (lease taken, websocket up, reconciled).
    while ACTIVE not in standby.log.read_text(errors="replace"):
        assert time.monotonic() - fault < 4 * TAKEOVER, f"no takeover:\n{standby.tail(60)}"
        time.sleep(0.02)
    took = time.monotonic() - fault
    union_everywhere(fleet, 2 * TAKEOVER)
    union_at = time.monotonic() - fault
    print(
        f"\nTAKEOVER kill -9 of machine 2's active recorder: standby recording after "
        f"{took:.2f} s; every API equal to the union {union_at:.2f} s after the fault"
    )
    assert took <= TAKEOVER
    for api in fleet.apis:
        assert holder_pid(api, 2) == pid(standby)
        assert holder_pid(api, 1) == pid(fleet.recorders[1][0])
        assert health(api)[0] == 200
    # Machine 1 was never affected: its active recorder kept its one websocket.
    assert fleet.recorders[1][0].log.read_text().count("events websocket connected") == 1

    for ari in (ari1, ari2):
        hang_up_parties(ari)
    union_everywhere(fleet, 3)
