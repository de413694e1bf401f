"""What each row carries: every SPEC §4 field with its JSON type, and number names."""

import pytest
from sqlalchemy import insert

from pbxcontrol.db.models import LEG_FIELDS, LEG_INT_FIELDS, DirectoryEntry, Line
from tests.plugins.active_calls.conftest import BY_ID, CALLS, get, insert_legs, leg

NAMES = ("snumber_name", "cnumber_name", "dnumber_name")


def test_rows_carry_every_leg_field_with_its_json_type(calls):
    rows = get(calls, as_="admin", customer="system")["data"]
    assert len(rows) == len(CALLS)
    for row in rows:
        assert list(row) == list(LEG_FIELDS)
        for name, value in row.items():
            expected = int if name in (*LEG_INT_FIELDS, "recorded") else str
            assert type(value) is expected, (name, value)
        assert row["recorded"] == 1  # nobody flagged machine 1 (SPEC §12)


def test_row_values_are_the_stored_leg(calls):
    row = get(calls, callid="120.1")["data"][1]
    assert row == {name: BY_ID["120.2"].get(name, 1) for name in LEG_FIELDS}  # recorded: 1
    assert row["recording"] == "/var/spool/rec/120.wav"
    assert (row["peer"], row["billing_peer"], row["outgroup"]) == (1, 1, 20)


def test_names_0_adds_no_name_fields(calls):
    assert not set(NAMES) & set(get(calls, names="0")["data"][0])


def test_names_1_adds_three_string_fields(calls):
    for row in get(calls, as_="admin", customer="system", names="1")["data"]:
        assert list(row) == list(LEG_FIELDS) + list(NAMES)
        assert all(type(row[n]) is str for n in NAMES)


def names_of(calls, uniqueid, **params):
    rows = get(calls, as_="admin", customer="system", names="1", **params)["data"]
    row = next(r for r in rows if r["uniqueid"] == uniqueid)
    return tuple(row[n] for n in NAMES)


def test_directory_entry_of_the_legs_own_customer_wins(calls):
    # Acme and Reseller A both name 0207946000; Acme's own entry is nearer.
    assert names_of(calls, "120.1") == ("Bob Jones", "Dentist", "Dentist")
    assert names_of(calls, "110.1")[0] == "Dentist"


def test_directory_entry_of_the_nearest_ancestor(calls):
    # Beta has no entry: its parent Reseller A's applies; Acme Branch gets Acme's.
    assert names_of(calls, "140.1")[1:] == ("Reseller's dentist", "Reseller's dentist")
    assert names_of(calls, "180.1")[1:] == ("Dentist", "Dentist")


def test_global_directory_entry_when_no_customer_names_the_number(calls):
    assert names_of(calls, "150.1") == ("Erin Green", "Emergency", "Emergency")


def test_telephone_line_names_of_the_legs_customers(calls):
    assert names_of(calls, "100.1") == ("Alice Smith", "Bob Jones", "Bob Jones")
    # Between tenants: the destination line belongs to the leg's dcustomer.
    assert names_of(calls, "170.1") == ("Alice Smith", "Carol White", "Carol White")


def test_leg_without_source_customer_is_named_from_its_destination_customer(calls):
    assert names_of(calls, "210.1") == ("", "Bob Jones", "Bob Jones")


def test_unknown_numbers_have_empty_names(calls):
    assert names_of(calls, "160.1") == ("", "", "")
    assert names_of(calls, "190.1") == ("", "", "")


def test_a_customers_own_view_gets_the_same_names(calls):
    rows = {r["uniqueid"]: r for r in get(calls, names="1")["data"]}
    assert rows["120.1"]["dnumber_name"] == "Dentist"
    assert rows["100.1"]["snumber_name"] == "Alice Smith"


@pytest.fixture
def shared_extension(rt, app):
    """Acme and Gamma both have an extension 4000; one Acme leg dials it."""
    with rt.engine.begin() as conn:
        conn.execute(
            insert(Line.__table__),
            [
                {
                    "endpoint": "PJSIP/g4000",
                    "customer_id": 7,
                    "number": "4000",
                    "name": "Gamma 4000",
                },
                {
                    "endpoint": "PJSIP/a4000",
                    "customer_id": 3,
                    "number": "4000",
                    "name": "Acme 4000",
                },
            ],
        )
        conn.execute(
            insert(DirectoryEntry.__table__),
            [
                {"customer_id": None, "number": "4001", "name": "Global 4001"},
                {"customer_id": 7, "number": "4001", "name": "Gamma 4001"},
            ],
        )
    insert_legs(
        rt,
        [
            leg(
                "1.1",
                "1.1",
                1,
                stype="phone",
                snumber="1001",
                scustomer=3,
                cnumber="4001",
                dnumber="4000",
                dtype="phone",
                dcustomer=3,
            )
        ],
    )
    return app


def test_line_name_is_never_taken_from_another_tenants_line(shared_extension):
    row = get(shared_extension, names="1")["data"][0]
    assert (row["cnumber_name"], row["dnumber_name"]) == ("Global 4001", "Acme 4000")


def test_seed_request_with_no_live_legs_is_an_empty_list(app):
    resp = app.get("/api/json/calls/active/list/?auth_username=acme;auth_password=acme-pass")
    assert resp.json == {"responses": [{"code": "200", "key": "", "message": "OK"}], "data": []}
    assert get(app, count="1")["data"] == {"count": 0}


def test_an_empty_directory_name_still_wins_over_later_rules(rt, app):
    """Only a missing entry falls through: a customer's entry named "" is its name."""
    with rt.engine.begin() as conn:
        conn.execute(
            insert(DirectoryEntry.__table__),
            [
                {"customer_id": None, "number": "4002", "name": "Global 4002"},
                {"customer_id": 3, "number": "4002", "name": ""},
                {"customer_id": None, "number": "4003", "name": "First"},
                {"customer_id": None, "number": "4003x", "name": "Other number"},
            ],
        )
    insert_legs(
        rt,
        [
            leg(
                "2.1",
                "2.1",
                1,
                snumber="4003",
                scustomer=3,
                cnumber="4002",
                dnumber="4002",
                dcustomer=3,
            ),
            leg("2.2", "2.2", 2, snumber="4002", scustomer=3, dnumber="4003"),
        ],
    )
    rows = {r["uniqueid"]: r for r in get(app, names="1")["data"]}
    assert (rows["2.1"]["snumber_name"], rows["2.1"]["cnumber_name"]) == ("First", "")
    assert (rows["2.2"]["snumber_name"], rows["2.2"]["dnumber_name"]) == ("", "First")
