"""Who sees which legs: the customer parameter, recursive, system, and every role."""

import pytest

from tests.plugins.active_calls.conftest import BY_ID, errors, get, ids, visible_to

ACME = visible_to(3)


def test_seed_request_verbatim_lists_own_customers_legs(calls):
    resp = calls.get("/api/json/calls/active/list/?auth_username=acme;auth_password=acme-pass")
    assert ids(resp.json) == ACME
    assert ACME == ["100.1", "100.2", "110.1", "110.2", "120.1", "120.2", "170.1", "170.2", "210.1"]


def test_customer_sees_a_call_to_another_tenant_and_that_tenant_sees_it_too(calls):
    assert {"170.1", "170.2"} <= set(ids(get(calls, as_="acme")))
    assert ids(get(calls, as_="beta")) == ["130.1", "140.1", "170.1", "170.2"]


def test_leg_without_source_customer_is_seen_by_its_destination_customer(calls):
    assert "210.1" in ids(get(calls, as_="acme"))


def test_customer_does_not_see_sub_customer_legs_without_recursive(calls):
    assert "180.1" not in ids(get(calls))


@pytest.mark.parametrize(
    "who,expected",
    [
        ("acme", visible_to(3, 5)),
        ("reseller", visible_to(2, 3, 4, 5)),
        ("gamma", visible_to(7)),
    ],
)
def test_recursive_1_adds_every_customer_under_own(calls, who, expected):
    assert ids(get(calls, as_=who, recursive="1")) == expected


def test_recursive_0_is_the_default(calls):
    assert ids(get(calls, recursive="0")) == ACME


def test_customer_id_of_own_customer_is_the_default_view(calls):
    assert ids(get(calls, customer="3")) == ACME


def test_customer_id_of_sub_customer(calls):
    assert ids(get(calls, customer="5")) == ["180.1"]


def test_reseller_sees_one_customer_by_id(calls):
    assert ids(get(calls, as_="reseller", customer="4")) == visible_to(4)


def test_customer_id_with_recursive_includes_its_descendants(calls):
    assert ids(get(calls, as_="reseller", customer="3", recursive="1")) == visible_to(3, 5)


@pytest.mark.parametrize(
    "who,customer",
    [
        ("acme", "4"),  # sibling
        ("acme", "2"),  # own parent
        ("acme", "1"),  # the root
        ("reseller", "7"),  # another reseller's customer
        ("reseller", "6"),  # another reseller
        ("beta", "3"),
        ("acme", "999"),  # unknown
        ("acme", "0"),
    ],
)
def test_customer_outside_own_subtree_is_400_customer(calls, who, customer):
    assert errors(get(calls, as_=who, customer=customer)) == [("400", "customer")]


@pytest.mark.parametrize(
    "customer", ["", "abc", "-1", "3.0", " 3", "3 ", "+3", "٣", "ALL", "1" * 30, "3;4"]
)
def test_customer_that_is_not_an_id_or_keyword_is_400(calls, customer):
    assert errors(get(calls, customer=customer)) == [("400", "customer")]


def test_reseller_cannot_see_sibling_customer_calls(calls):
    # 150.1 is Gamma's (under Reseller B): whatever Reseller A asks, it is not listed...
    assert "150.1" in visible_to(7) and "150.1" in ids(get(calls, as_="admin", customer="system"))
    for params in (
        {},
        {"customer": "all"},
        {"customer": "recursive"},
        {"recursive": "1"},
        {"callid": "150.1"},
        {"snumber": "3001"},
        {"snumber": "3001", "recursive": "1"},
    ):
        assert "150.1" not in ids(get(calls, as_="reseller", **params)), params
    # ...and naming Gamma, or Gamma's telephone line, is refused, not answered empty.
    for params, key in (
        ({"phone": "3001"}, "phone"),
        ({"phone": "PJSIP/erin", "recursive": "1"}, "phone"),
        ({"customer": "7"}, "customer"),
    ):
        assert errors(get(calls, as_="reseller", **params)) == [("400", key)], params


def test_all_lists_direct_children_only(calls):
    assert ids(get(calls, as_="reseller", customer="all")) == visible_to(3, 4)


def test_all_ignores_recursive(calls):
    assert ids(get(calls, as_="reseller", customer="all", recursive="1")) == visible_to(3, 4)


def test_all_for_the_system_owner_lists_the_resellers(calls):
    assert ids(get(calls, as_="admin", customer="all")) == visible_to(2, 6)


def test_all_for_a_leaf_customer_is_empty(calls):
    assert ids(get(calls, as_="beta", customer="all")) == []


def test_recursive_lists_every_customer_under_own_but_not_own(calls):
    assert ids(get(calls, as_="reseller", customer="recursive")) == visible_to(3, 4, 5)
    assert "190.1" not in ids(get(calls, as_="reseller", customer="recursive"))


def test_recursive_for_the_system_owner_misses_only_unowned_and_root_legs(calls):
    assert ids(get(calls, as_="admin", customer="recursive")) == visible_to(2, 3, 4, 5, 6, 7)


def test_system_owner_sees_every_leg_with_system(calls):
    assert ids(get(calls, as_="admin", customer="system")) == list(BY_ID)


def test_unowned_leg_is_seen_only_through_system(calls):
    for who in ("admin", "reseller", "acme", "beta", "gamma", "wall"):
        for customer in (None, "all", "recursive"):
            params = {} if customer is None else {"customer": customer}
            assert "160.1" not in ids(get(calls, as_=who, **params))
    assert "160.1" in ids(get(calls, as_="admin", customer="system"))


def test_system_owner_default_view_is_its_own_customer(calls):
    assert ids(get(calls, as_="admin")) == ["200.1"]


@pytest.mark.parametrize("who", ["reseller", "acme", "beta", "gamma", "wall"])
def test_system_is_402_for_everyone_but_the_system_owner(calls, who):
    envelope = get(calls, as_=who, customer="system")
    assert envelope == {
        "responses": [
            {
                "code": "402",
                "key": "customer",
                "message": "Only the system owner may list the whole system.",
            }
        ]
    }


def test_system_402_wins_over_other_invalid_parameters(calls):
    assert errors(get(calls, customer="system", sort="nope")) == [("402", "customer")]


def test_system_ignores_recursive(calls):
    assert ids(get(calls, as_="admin", customer="system", recursive="1")) == list(BY_ID)


@pytest.mark.parametrize(
    "who,expected",
    [
        ("admin", visible_to(1)),  # system owner
        ("reseller", visible_to(2)),  # reseller
        ("wall", visible_to(2)),  # wallboard: telephone line reports only
        ("acme", visible_to(3)),  # administrator
        ("beta", visible_to(4)),  # user
        ("gamma", visible_to(7)),  # callshop
    ],
)
def test_every_listing_role_sees_its_own_customer(calls, who, expected):
    assert ids(get(calls, as_=who)) == expected


def test_panel_role_cannot_list_calls(calls):
    assert errors(get(calls, as_="panel")) == [("402", "")]


def test_disabled_person_gets_401(calls):
    assert errors(get(calls, as_="gone")) == [("401", "")]


@pytest.mark.parametrize(
    "params,foreign",
    [
        ({"callid": "130.1"}, ["130.1"]),  # Beta's call
        ({"dnumber": "2002"}, ["130.1"]),  # Beta's line
        ({"stype": "phone"}, ["130.1", "140.1", "150.1", "180.1", "190.1", "200.1"]),
    ],
)
def test_legs_of_other_tenants_never_leak_through_filters(calls, params, foreign):
    # The filter does match those legs (the system view shows them); Acme gets only its own.
    assert set(foreign) <= set(ids(get(calls, as_="admin", customer="system", **params)))
    got = ids(get(calls, **params))
    assert got == [
        u for u in ACME if u in ids(get(calls, as_="admin", customer="system", **params))
    ]
    assert not set(foreign) & set(got)
