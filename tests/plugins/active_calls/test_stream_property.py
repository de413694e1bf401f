"""Tenant isolation as a property over the stream: for any person, any parameters and any
sequence of leg changes written through the recorder's store (journal included), a client
applying the stream holds exactly the list's rows after each change, and never a leg outside
the person's subtree."""

from __future__ import annotations

import contextlib
import json

import pytest
import webtest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import LIST, build_provisioned, write_config
from tests.plugins.active_calls.changes_support import PARAMS, PEOPLE, apply_step, steps, subtree
from tests.plugins.active_calls.stream_support import Client, query, serving, write_legs


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
