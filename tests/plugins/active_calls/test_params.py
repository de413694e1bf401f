"""Sorting, the 0/1 flags, and how invalid parameters are reported."""

import pytest

from tests.plugins.active_calls.conftest import BY_ID, errors, get, ids, visible_to

EVERYTHING = list(BY_ID)
SORTS = [
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
]


def system(calls, **params):
    return ids(get(calls, as_="admin", customer="system", **params))


@pytest.mark.parametrize("sort", SORTS)
def test_sort_by_each_field_breaks_ties_by_start_then_uniqueid(calls, sort):
    rows = sorted(BY_ID.values(), key=lambda r: (r[sort], r["start"], r["uniqueid"]))
    assert system(calls, sort=sort) == [r["uniqueid"] for r in rows]


@pytest.mark.parametrize("sort", SORTS)
def test_descending_reverses_the_whole_order(calls, sort):
    assert system(calls, sort=sort, descending="1") == system(calls, sort=sort)[::-1]


def test_default_sort_is_start_ascending(calls):
    assert system(calls) == system(calls, sort="start", descending="0")
    starts = [BY_ID[u]["start"] for u in system(calls)]
    assert starts == sorted(starts)


def test_ties_on_the_sort_field_are_broken_by_start(calls):
    # Every Acme leg has machine 1 except 210.1: within machine 1, by start.
    got = ids(get(calls, sort="machine"))
    assert got == [u for u in visible_to(3) if u != "210.1"] + ["210.1"]


@pytest.mark.parametrize(
    "sort", ["", "START", "name", "start;", "legs.start", "id", "callername_internal", "start desc"]
)
def test_invalid_sort_is_400(calls, sort):
    assert errors(get(calls, sort=sort)) == [("400", "sort")]


@pytest.mark.parametrize("param", ["recursive", "descending", "names", "count"])
@pytest.mark.parametrize("value", ["", "2", "-1", "true", "yes", "01", " 1", "1.0", "on"])
def test_flags_accept_only_0_or_1(calls, param, value):
    assert errors(get(calls, **{param: value})) == [("400", param)]


def test_every_invalid_parameter_gets_its_own_entry(calls):
    envelope = get(
        calls,
        customer="x",
        recursive="2",
        direction="up",
        sort="name",
        descending="y",
        names="z",
        count="n",
        smatch="a",
        cmatch="b",
        dmatch="c",
        callername_match="d",
        phone="PJSIP/nobody",
    )
    assert errors(envelope) == [
        ("400", key)
        for key in (
            "recursive",
            "descending",
            "names",
            "count",
            "customer",
            "direction",
            "sort",
            "smatch",
            "cmatch",
            "dmatch",
            "callername_match",
            "phone",
        )
    ]
    assert all(r["message"] for r in envelope["responses"])


def test_invalid_customer_id_and_other_errors_are_reported_together(calls):
    assert errors(get(calls, customer="4", sort="x")) == [("400", "sort"), ("400", "customer")]


def test_unknown_parameters_are_ignored(calls):
    assert ids(get(calls, foo="bar", api_version="4.4", _="123")) == visible_to(3)


def test_post_takes_the_same_parameters(calls):
    resp = calls.post(
        "/api/json/calls/active/list/",
        {
            "auth_username": "acme",
            "auth_password": "acme-pass",
            "direction": "in",
            "sort": "uniqueid",
            "descending": "1",
        },
    )
    assert ids(resp.json) == ["110.2", "110.1"]
