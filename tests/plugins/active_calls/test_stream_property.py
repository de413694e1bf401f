"""Tenant isolation as a property over the stream: for any person, any parameters and any
sequence of leg changes written through the recorder's store (journal included), a client
applying the stream holds exactly the list's rows after each change, and never a leg outside
the person's subtree."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import webtest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import LIST, TREE, build_provisioned, write_config
from tests.plugins.active_calls.conftest import leg
from tests.plugins.active_calls.stream_support import Client, query, serving, write_legs

PARENTS = {c["id"]: c["parent"] for c in TREE["customers"]}
#: Every person who may list (the refusals are tests/plugins/active_calls/test_stream.py's).
PEOPLE = {p["username"]: p for p in TREE["people"] if p.get("enabled", True)}
PEOPLE.pop("panel")
CUSTOMERS = [0, *PARENTS, 3, 4, 7, 99]  # 0: no customer owns that end; 99: not in the tree
NUMBERS = ["1001", "2001", "0207946000", "112", "555"]
PARAMS = {
    "customer": ["", "all", "recursive", "system", *map(str, PARENTS), "99"],
    "recursive": ["0", "1"],
    "direction": ["", "in", "internal", "in_out", "out"],
    "sort": ["start", "snumber", "dnumber", "direction", "uniqueid", "machine", "scustomer"],
    "descending": ["0", "1"],
    "names": ["0", "1"],
    "count": ["0", "1"],
    "callid": ["c0", "c1"],
    "stype": ["phone", "external"],
    "snumber": ["1001", "20", "0"],
    "smatch": ["contains", "exact", "starts", "ends"],
    "dnumber": ["112", "0207946000"],
    "dmatch": ["exact", "ends"],
    "phone": ["PJSIP/alice", "1001", "PJSIP/erin"],
}
UIDS = [f"{n}.1" for n in range(6)]


@st.composite
def fields(draw) -> dict[str, Any]:
    return dict(
        callid=draw(st.sampled_from(["c0", "c1"])),
        scustomer=draw(st.sampled_from(CUSTOMERS)),
        dcustomer=draw(st.sampled_from(CUSTOMERS)),
        stype=draw(st.sampled_from(["phone", "external", ""])),
        snumber=draw(st.sampled_from(NUMBERS)),
        dnumber=draw(st.sampled_from(NUMBERS)),
        direction=draw(st.sampled_from(["in", "out", "internal"])),
        status=draw(st.sampled_from(["Ring", "Ringing", "Up"])),
        channel=draw(st.sampled_from(["PJSIP/alice-1", "PJSIP/trunk1-2", "Local/600@x-3;1"])),
    )


#: One step: up to three legs, each inserted (if not live), updated or ended (if live).
steps = st.lists(
    st.lists(
        st.tuples(st.sampled_from(UIDS), st.integers(1, 2), st.booleans(), fields()),
        min_size=1,
        max_size=3,
        unique_by=lambda op: (op[0], op[1]),
    ),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def site(database, databases, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("streamprop")
    with databases.fresh(database, tmp_path) as url:
        config = write_config(tmp_path, db=url)
        config.write_text(
            config.read_text().replace("[http]\n", "[http]\nstreams_per_person = 1000\n", 1)
        )
        rt = build_provisioned(config)
        with serving(rt) as address:
            yield rt, address, webtest.TestApp(rt.app), {}
        rt.close()


def subtree(top: int) -> set[int]:
    def chain(c):
        while c is not None:
            yield c
            c = PARENTS[c]

    return {c for c in PARENTS if top in chain(c)}


def apply_step(rt, live: dict[tuple[int, str], dict], ops, clock: list[int]) -> None:
    """Write one step through the store, one transaction per machine, as the recorder does."""
    for machine in (1, 2):
        inserts, updates, ended = [], [], []
        for uid, m, end, values in ops:
            if m != machine:
                continue
            old = live.get((m, uid))
            if old is None:
                clock[0] += 1
                row = live[(m, uid)] = dict(leg(uid, "", clock[0], machine=m), **values)
                inserts.append(row)
            elif end:
                ended.append(live.pop((m, uid)))
            else:
                row = live[(m, uid)] = dict(old, **values)
                updates.append(row)
        if inserts or updates or ended:
            write_legs(rt, machine, upsert=inserts, update=updates, gone=ended)


def check_held(client: Client, app, q: str, allowed) -> None:
    """After a change: the client holds the list's rows (or count), nothing foreign."""
    listed = json.loads(app.get(LIST + "?" + q).body)["data"]
    if isinstance(listed, dict):
        client.read_until(lambda c: {"count": c.count} == listed, timeout=5)
        return
    want = sorted(listed, key=lambda r: (r["start"], r["uniqueid"], r["machine"]))
    client.read_until(lambda c: c.listed() == want, timeout=5)
    shown: set[tuple[int, str]] = set()
    for _, kind, data in client.events:
        if kind == "upsert":
            assert allowed(data), f"a foreign leg was streamed: {data}"
        elif kind == "snapshot":
            assert all(allowed(row) for row in data["data"]), data
        if "uniqueid" in data:  # a remove names only a leg this client was shown
            key = (data["machine"], data["uniqueid"])
            assert kind == "upsert" or key in shown, f"a remove of a leg never shown: {data}"
            shown.add(key)
        elif kind == "snapshot" and "data" in data:
            shown |= {(r["machine"], r["uniqueid"]) for r in data["data"]}


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    who=st.sampled_from(sorted(PEOPLE)),
    params=st.lists(st.sampled_from(sorted(PARAMS)), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: st.sampled_from(PARAMS[k]) for k in keys})
    ),
    initial=steps,
    changes=steps,
)
def test_a_streaming_client_holds_the_lists_rows_and_nothing_foreign(
    site, who, params, initial, changes
):
    rt, address, app, live = site
    if live:  # end the last example's legs through the store (no stream is open now)
        for machine in (1, 2):
            gone = [row for (m, _), row in live.items() if m == machine]
            write_legs(rt, machine, gone=gone)
        live.clear()
    clock = [1000]
    for ops in initial:
        apply_step(rt, live, ops, clock)
    q = query(who, **params)
    client = Client(address, q)
    if client.header("Content-Type") != "text/event-stream":  # an error: exactly the list's
        event(f"refused {client.envelope()['responses'][0]['code']}")
        assert client.envelope() == json.loads(app.get(LIST + "?" + q).body)
        client.close()
        return
    person = PEOPLE[who]
    mine = subtree(person["customer"])
    system = person["role"] == "system owner" and params.get("customer") == "system"
    event("system view" if system else f"count={params.get('count', '0')}")

    def allowed(row) -> bool:
        return system or row["scustomer"] in mine or row["dcustomer"] in mine

    try:
        client.read_until(lambda c: c.events)
        assert client.events[0][1] == "snapshot"
        listed = json.loads(app.get(LIST + "?" + q).body)["data"]
        assert client.events[0][2] == (listed if isinstance(listed, dict) else {"data": listed})
        for ops in changes:
            apply_step(rt, live, ops, clock)
            check_held(client, app, q, allowed)
        # Late events too: a stray one after the last check must not break the property.
        with contextlib.suppress(AssertionError):
            client.read_until(lambda c: False, timeout=0.3)
        check_held(client, app, q, allowed)
        ids = [e[0] for e in client.events]
        assert ids == sorted(set(ids))
        kinds = {kind for _, kind, _ in client.events[1:]}
        event(f"streamed {'+'.join(sorted(kinds)) or 'nothing'} after the snapshot")
    finally:
        client.close()
