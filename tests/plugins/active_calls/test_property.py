"""For random trees, legs and parameters: always a well-formed envelope, never a foreign leg."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import webtest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from pbxcontrol.auth.passwords import hash_password
from pbxcontrol.db import models
from tests.conftest import LIST, write_config
from tests.plugins.active_calls.conftest import insert_legs, leg

ROLES = ["system owner", "reseller", "administrator", "user", "callshop", "panel"]
NUMBERS = ["100", "101", "200", "%", "_", "1_0", ""]
PASSWORD = "pw"
VALID = {
    "customer": ["all", "recursive", "system", "1", "2", "3", "5", "8", "99", ""],
    "recursive": ["0", "1"],
    "descending": ["0", "1"],
    "names": ["0", "1"],
    "count": ["0", "1"],
    "direction": ["", "in", "internal", "in_out", "out"],
    "sort": [
        "cnumber",
        "ctype",
        "direction",
        "dnumber",
        "dtype",
        "machine",
        "peer",
        "scustomer",
        "snumber",
        "stype",
        "uniqueid",
        "start",
    ],
    "callid": ["c0", "c1", ""],
    "stype": ["phone", "external", ""],
    "ctype": ["", "x"],
    "dtype": ["phone", "external"],
    "snumber": NUMBERS,
    "cnumber": NUMBERS,
    "dnumber": NUMBERS,
    "callername_number": ["a", "%", "B"],
    "smatch": ["contains", "exact", "starts", "ends", ""],
    "cmatch": ["exact", "ends"],
    "dmatch": ["starts"],
    "callername_match": ["exact", "contains"],
    "phone": ["PJSIP/l0", "PJSIP/l1", "100", "200", ""],
    "junk": ["1"],
}


@st.composite
def worlds(draw):
    size = draw(st.integers(1, 7))
    parents = {1: None} | {c: draw(st.integers(1, c - 1)) for c in range(2, size + 1)}
    customer = st.sampled_from([0, 99, *parents])
    legs = [
        leg(
            f"u{i}",
            draw(st.sampled_from(["c0", "c1", "c2"])),
            draw(st.integers(0, 3)),
            scustomer=draw(customer),
            dcustomer=draw(customer),
            snumber=draw(st.sampled_from(NUMBERS)),
            dnumber=draw(st.sampled_from(NUMBERS)),
            stype=draw(st.sampled_from(["phone", "external", ""])),
            direction=draw(st.sampled_from(["in", "out", "internal"])),
            callername_internal=draw(st.sampled_from(["Ab", "b%", ""])),
            machine=draw(st.integers(1, 2)),
        )
        for i in range(draw(st.integers(0, 12)))
    ]
    lines = [
        {
            "endpoint": f"PJSIP/l{i}",
            "customer_id": draw(st.sampled_from(list(parents))),
            "number": draw(st.sampled_from(["100", "200"])),
            "name": f"line {i}",
        }
        for i in range(draw(st.integers(0, 3)))
    ]
    roles = {c: draw(st.sampled_from(ROLES)) for c in parents}
    return parents, roles, lines, legs


garbage = st.text(max_size=6)
parameters = st.dictionaries(
    st.sampled_from(sorted(VALID)),
    st.one_of(*(st.sampled_from(v) for v in VALID.values()), garbage),
    max_size=6,
) | st.dictionaries(st.sampled_from(sorted(VALID)), garbage, max_size=4)


@pytest.fixture(scope="module")
def world_app(database, databases, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prop")
    with databases.fresh(database, tmp_path) as url:
        built = runtime.build(config_mod.load(str(write_config(tmp_path, db=url))), record=False)
        # One hash for every person: the authenticator verifies it once per username, then caches.
        built.password_hash = hash_password(PASSWORD)
        yield built, webtest.TestApp(built.app)
        built.close()


def load_world(rt, parents, roles, lines, legs) -> None:
    with rt.sessions.begin() as session:
        for table in (
            "legs",
            "people",
            "lines",
            "numbers",
            "directory",
            "customer_tree",
            "customers",
        ):
            session.execute(delete(models.Base.metadata.tables[table]))
        session.execute(
            insert(models.Customer.__table__),
            [{"id": c, "parent_id": p, "name": f"c{c}"} for c, p in parents.items()],
        )
        session.execute(
            insert(models.Person.__table__),
            [
                {
                    "username": f"p{c}",
                    "password_hash": rt.password_hash,
                    "customer_id": c,
                    "role": roles[c],
                    "enabled": True,
                }
                for c in parents
            ],
        )
        if lines:
            session.execute(insert(models.Line.__table__), lines)
        session.execute(
            insert(models.DirectoryEntry.__table__),
            [
                {"customer_id": None, "number": "100", "name": "global"},
                {"customer_id": max(parents), "number": "100", "name": "deepest"},
            ],
        )
        provisioning.rebuild_customer_tree(session)
    if legs:
        insert_legs(rt, legs)


def subtree(parents: dict[int, int | None], top: int) -> set[int]:
    def chain(c):
        while c is not None:
            yield c
            c = parents[c]

    return {c for c in parents if top in chain(c)}


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds(), who=st.integers(1, 7), params=parameters)
def test_any_request_is_a_well_formed_envelope_without_foreign_legs(world_app, world, who, params):
    rt, app = world_app
    parents, roles, lines, legs = world
    who = min(who, max(parents))
    load_world(rt, parents, roles, lines, legs)
    query = ";".join(
        [f"auth_username=p{who}", f"auth_password={PASSWORD}"]
        + [f"{k}={quote(v, safe='')}" for k, v in params.items()]
    )
    resp = app.get(LIST + "?" + query)
    assert resp.status_int == 200
    envelope = json.loads(resp.body)
    responses = envelope["responses"]
    codes = {r["code"] for r in responses}
    event(f"code {sorted(codes)}")
    assert len(codes) == 1 and codes <= {"200", "400", "402"}, envelope
    assert all(set(r) == {"code", "key", "message"} for r in responses)
    if codes == {"402"}:  # only a role that cannot list, or `system` asked by a non-owner
        assert roles[who] == "panel" or (params.get("customer") == "system" and who != 1)
    if codes != {"200"}:
        assert "data" not in envelope
        return
    assert roles[who] != "panel"
    mine = subtree(parents, who)
    allowed = {
        r["uniqueid"] for r in legs if who == 1 or r["scustomer"] in mine or r["dcustomer"] in mine
    }
    data = envelope["data"]
    event("count" if isinstance(data, dict) else "listing")
    if isinstance(data, dict):  # count=1: exactly the length of the same listing
        assert params.get("count") == "1"
        listing = app.get(LIST + "?" + query.replace("count=1", "count=0"))
        assert data == {"count": len(json.loads(listing.body)["data"])}
        return
    got = [row["uniqueid"] for row in data]
    assert len(got) == len(set(got))
    assert set(got) <= allowed
    if not params:  # the default view: exactly the legs of the person's own customer
        assert set(got) == {r["uniqueid"] for r in legs if who in (r["scustomer"], r["dcustomer"])}
