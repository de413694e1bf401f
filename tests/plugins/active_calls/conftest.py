"""Live legs for the active_calls tests: inserted straight into `legs`, as the recorder would."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import webtest
from sqlalchemy import insert

from pbxcontrol.db.models import LEG_INT_FIELDS, LEG_STRING_FIELDS
from pbxcontrol.plugin import tables
from tests.conftest import LIST, build_provisioned, write_config

legs = tables.legs


def leg(uniqueid: str, callid: str, start: int, **fields: Any) -> dict[str, Any]:
    """A leg row with the recorder's defaults ("" / 0) for whatever the test does not say."""
    row: dict[str, Any] = {name: "" for name in LEG_STRING_FIELDS}
    row.update({name: 0 for name in LEG_INT_FIELDS})
    row.update(
        machine=1,
        uniqueid=uniqueid,
        callid=callid,
        start=start,
        status="Up",
        channel=f"PJSIP/x-{uniqueid}",
        direction="internal",
    )
    row.update(fields)
    if not row.get("endpoint"):  # as the recorder files it (recorder/leg.py endpoint_of)
        head, sep, _ = row["channel"].split(";", 1)[0].rpartition("-")
        row["endpoint"] = head if sep and "/" in head else row["channel"]
    return row


def insert_legs(rt, rows: list[dict[str, Any]]) -> None:
    with rt.engine.begin() as conn:
        conn.execute(insert(legs), rows)


ALICE = dict(
    stype="phone",
    snumber="1001",
    scustomer=3,
    callerid_internal="1001",
    callerid_external="0201112222",
    callername_internal="Alice",
    callername_external="Acme Ltd",
)
BOB = dict(
    stype="phone",
    snumber="1002",
    scustomer=3,
    callerid_internal="1002",
    callerid_external="1002",
    callername_internal="Bob Jones",
    callername_external="Bob Jones",
)
TRUNK_OUT = dict(
    dtype="external", dcustomer=0, peer=1, billing_peer=1, outgroup=20, direction="out"
)

#: A realistic set of live calls (uniqueid -> row) in every direction and several tenants.
CALLS = [
    # Acme internal: alice dials bob.
    leg(
        "100.1",
        "100.1",
        100,
        channel="PJSIP/alice-00000001",
        cnumber="1002",
        dtype="phone",
        dnumber="1002",
        dcustomer=3,
        sip_callid="sip-a1",
        answered=105,
        **ALICE,
    ),
    leg(
        "100.2",
        "100.1",
        101,
        channel="PJSIP/bob-00000002",
        cnumber="1002",
        dtype="phone",
        dnumber="1002",
        dcustomer=3,
        answered=105,
        **ALICE,
    ),
    # Inbound: the Dentist calls Acme's DID, which rings alice; scustomer is the DID's owner.
    leg(
        "110.1",
        "110.1",
        110,
        channel="PJSIP/trunk1-00000003",
        stype="external",
        snumber="0207946000",
        scustomer=3,
        cnumber="0201112222",
        dtype="phone",
        dnumber="1001",
        dcustomer=3,
        ingroup=10,
        direction="in",
        status="Ring",
        callerid_internal="0207946000",
        callerid_external="0207946000",
        callername_internal="DENTIST SURGERY",
        callername_external="DENTIST SURGERY",
    ),
    leg(
        "110.2",
        "110.1",
        111,
        channel="PJSIP/alice-00000004",
        stype="external",
        snumber="0207946000",
        scustomer=3,
        cnumber="0201112222",
        dtype="phone",
        dnumber="1001",
        dcustomer=3,
        ingroup=10,
        direction="in",
        status="Ringing",
    ),
    # Outbound: bob calls the dentist through the trunk.
    leg(
        "120.1",
        "120.1",
        120,
        channel="PJSIP/bob-00000005",
        cnumber="0207946000",
        dnumber="0207946000",
        **BOB,
        **TRUNK_OUT,
    ),
    leg(
        "120.2",
        "120.1",
        121,
        channel="PJSIP/trunk1-00000006",
        cnumber="0207946000",
        dnumber="0207946000",
        recording="/var/spool/rec/120.wav",
        **BOB,
        **TRUNK_OUT,
    ),
    # Beta internal, forwarded (ctype), and Beta outbound to a number only Reseller A names.
    leg(
        "130.1",
        "130.1",
        130,
        channel="PJSIP/carol-00000007",
        stype="phone",
        snumber="2001",
        scustomer=4,
        cnumber="2002",
        ctype="forward",
        dtype="phone",
        dnumber="2002",
        dcustomer=4,
        callername_internal="Carol",
    ),
    leg(
        "140.1",
        "140.1",
        140,
        channel="PJSIP/dave-00000008",
        stype="phone",
        snumber="2002",
        scustomer=4,
        cnumber="0207946000",
        dnumber="0207946000",
        machine=2,
        **TRUNK_OUT,
    ),
    # Gamma (under Reseller B) calls emergency services.
    leg(
        "150.1",
        "150.1",
        150,
        channel="PJSIP/erin-00000009",
        stype="phone",
        snumber="3001",
        scustomer=7,
        cnumber="112",
        dnumber="112",
        callername_internal="Erin",
        **TRUNK_OUT,
    ),
    # Originated through ARI to a trunk: no customer owns it.
    leg(
        "160.1",
        "160.1",
        160,
        channel="PJSIP/trunk1-0000000a",
        stype="",
        snumber="0300000000",
        cnumber="0300000001",
        dnumber="0300000001",
        **TRUNK_OUT,
    ),
    # Between tenants: Acme's alice calls Beta's carol; both see it.
    leg(
        "170.1",
        "170.1",
        170,
        channel="PJSIP/alice-0000000b",
        cnumber="2001",
        dtype="phone",
        dnumber="2001",
        dcustomer=4,
        **ALICE,
    ),
    leg(
        "170.2",
        "170.1",
        171,
        channel="PJSIP/carol-0000000c",
        cnumber="2001",
        dtype="phone",
        dnumber="2001",
        dcustomer=4,
        **ALICE,
    ),
    # Acme Branch (under Acme) calls the dentist; Reseller A and the root make calls too.
    leg(
        "180.1",
        "180.1",
        180,
        stype="phone",
        snumber="5001",
        scustomer=5,
        cnumber="0207946000",
        dnumber="0207946000",
        **TRUNK_OUT,
    ),
    leg(
        "190.1",
        "190.1",
        190,
        stype="phone",
        snumber="9001",
        scustomer=2,
        cnumber="9002",
        dtype="phone",
        dnumber="9002",
        dcustomer=2,
    ),
    leg(
        "200.1",
        "200.1",
        200,
        stype="phone",
        snumber="8001",
        scustomer=1,
        cnumber="8002",
        dtype="phone",
        dnumber="8002",
        dcustomer=1,
    ),
    # Originated through ARI to bob: no source customer, but bob's customer sees it.
    leg(
        "210.1",
        "210.1",
        210,
        stype="",
        snumber="0300000002",
        cnumber="1002",
        dtype="phone",
        dnumber="1002",
        dcustomer=3,
        machine=2,
    ),
]
BY_ID = {row["uniqueid"]: row for row in CALLS}


@pytest.fixture(scope="module")
def calls(database, databases, tmp_path_factory):
    """The TREE with CALLS live, shared by a module's read-only tests (provisioning hashes
    eight passwords: once per module and engine, not once per test)."""
    tmp_path = tmp_path_factory.mktemp("calls")
    with databases.fresh(database, tmp_path) as url:
        built = build_provisioned(write_config(tmp_path, db=url))
        insert_legs(built, CALLS)
        yield webtest.TestApp(built.app)
        built.close()


def get(app, **params: str):
    """GET calls/active/list as `as_` (a TREE person, password "<name>-pass")."""
    who = params.pop("as_", "acme")
    query = ";".join(
        [f"auth_username={who}", f"auth_password={who}-pass"]
        + [f"{k}={quote(v, safe='')}" for k, v in params.items()]
    )
    resp = app.get(LIST + "?" + query)
    assert resp.status_int == 200
    return resp.json


def ids(envelope) -> list[str]:
    assert envelope["responses"] == [{"code": "200", "key": "", "message": "OK"}], envelope
    return [row["uniqueid"] for row in envelope["data"]]


def errors(envelope) -> list[tuple[str, str]]:
    assert "data" not in envelope
    return [(r["code"], r["key"]) for r in envelope["responses"]]


def visible_to(*customers: int) -> list[str]:
    """uniqueids of CALLS whose scustomer or dcustomer is one of `customers`, by start."""
    return [
        u for u, r in BY_ID.items() if r["scustomer"] in customers or r["dcustomer"] in customers
    ]
