"""direction, callid, the type, number and caller-name filters, phone, and count."""

import pytest

from tests.plugins.active_calls.conftest import BY_ID, errors, get, ids, visible_to

ACME = visible_to(3)
ACME_TREE = visible_to(3, 5)


def acme_where(**want):
    return [u for u in ACME if all(BY_ID[u][k] == v for k, v in want.items())]


@pytest.mark.parametrize(
    "direction,wanted",
    [
        ("in", ("in",)),
        ("out", ("out",)),
        ("internal", ("internal",)),
        ("in_out", ("in", "out")),
    ],
)
def test_direction_filters_legs(calls, direction, wanted):
    got = ids(get(calls, direction=direction))
    assert got == [u for u in ACME if BY_ID[u]["direction"] in wanted]
    assert got


def test_empty_direction_means_every_direction(calls):
    assert ids(get(calls, direction="")) == ACME


@pytest.mark.parametrize("direction", ["IN", "inbound", "in,out", "in_out ", "both", "0"])
def test_invalid_direction_is_400(calls, direction):
    assert errors(get(calls, direction=direction)) == [("400", "direction")]


def test_callid_lists_the_legs_of_one_call(calls):
    assert ids(get(calls, callid="110.1")) == ["110.1", "110.2"]


def test_empty_callid_means_not_set(calls):
    assert ids(get(calls, callid="")) == ACME


def test_callid_of_another_tenants_call_is_empty(calls):
    assert ids(get(calls, callid="150.1")) == []


@pytest.mark.parametrize(
    "param,value",
    [
        ("stype", "external"),
        ("stype", "phone"),
        ("stype", ""),
        ("ctype", "forward"),
        ("dtype", "phone"),
        ("dtype", "external"),
    ],
)
def test_type_filters_are_exact(calls, param, value):
    got = ids(get(calls, as_="reseller", recursive="1", **{param: value}))
    expected = visible_to(2, 3, 4, 5)
    if value:  # "" means not set
        expected = [u for u in expected if BY_ID[u][param] == value]
    assert got == expected


def test_type_filter_does_not_match_part_of_a_type(calls):
    assert ids(get(calls, stype="ext")) == []


@pytest.mark.parametrize(
    "param,mode,value,column",
    [
        ("snumber", None, "794", "snumber"),
        ("snumber", "contains", "794", "snumber"),
        ("snumber", "exact", "1001", "snumber"),
        ("snumber", "starts", "02", "snumber"),
        ("snumber", "ends", "02", "snumber"),
        ("cnumber", "exact", "1002", "cnumber"),
        ("cnumber", "starts", "020", "cnumber"),
        ("cnumber", "ends", "6000", "cnumber"),
        ("cnumber", "contains", "111", "cnumber"),
        ("dnumber", "exact", "1001", "dnumber"),
        ("dnumber", "starts", "1", "dnumber"),
        ("dnumber", "ends", "2", "dnumber"),
        ("dnumber", "contains", "946", "dnumber"),
    ],
)
def test_number_filters_with_every_match_mode(calls, param, mode, value, column):
    params = {param: value}
    if mode:
        params[param[0] + "match"] = mode
    match = {
        None: str.__contains__,
        "contains": str.__contains__,
        "exact": str.__eq__,
        "starts": str.startswith,
        "ends": str.endswith,
    }[mode]
    got = ids(get(calls, **params))
    assert got == [u for u in ACME if match(BY_ID[u][column], value)]
    assert got


def test_empty_match_mode_is_contains(calls):
    assert ids(get(calls, snumber="794", smatch="")) == ids(get(calls, snumber="794"))


def test_empty_number_filter_means_not_set(calls):
    assert ids(get(calls, snumber="", dnumber="", cnumber="", smatch="exact")) == ACME


@pytest.mark.parametrize("value", ["%", "_", "1_01", "10%", "\\", "%1001%"])
def test_like_wildcards_in_filters_are_literal(calls, value):
    assert ids(get(calls, snumber=value)) == []
    assert ids(get(calls, callername_number=value)) == []


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        (None, "acme", ["100.1", "100.2", "170.1", "170.2"]),  # callername_external, any case
        ("contains", "JONES", ["120.1", "120.2"]),
        ("exact", "Alice", ["100.1", "100.2", "170.1", "170.2"]),
        ("exact", "alice", []),
        ("starts", "dent", ["110.1"]),
        ("ends", "ltd", ["100.1", "100.2", "170.1", "170.2"]),
    ],
)
def test_callername_number_matches_either_caller_name(calls, mode, value, expected):
    params = {"callername_number": value}
    if mode:
        params["callername_match"] = mode
    assert ids(get(calls, **params)) == expected


@pytest.mark.parametrize("param", ["smatch", "cmatch", "dmatch", "callername_match"])
@pytest.mark.parametrize("value", ["regex", "EXACT", "start", "0"])
def test_invalid_match_mode_is_400_keyed_by_its_name(calls, param, value):
    assert errors(get(calls, **{param: value})) == [("400", param)]


@pytest.mark.parametrize(
    "param",
    [
        "snumber",
        "cnumber",
        "dnumber",
        "callername_number",
        "stype",
        "ctype",
        "dtype",
        "callid",
        "phone",
    ],
)
def test_overlong_or_nul_filter_value_is_400(calls, param):
    assert errors(get(calls, **{param: "1" * 256})) == [("400", param)]
    assert errors(get(calls, **{param: "a\x00b"})) == [("400", param)]


@pytest.mark.parametrize("phone", ["PJSIP/alice", "1001"])
def test_phone_lists_legs_whose_source_is_that_line(calls, phone):
    assert ids(get(calls, phone=phone)) == ["100.1", "100.2", "170.1", "170.2"]


def test_phone_of_a_line_of_a_sub_customer_seen_by_its_reseller(calls):
    assert ids(get(calls, as_="reseller", recursive="1", phone="PJSIP/carol")) == ["130.1"]


def test_phone_narrows_but_never_widens_the_scope(calls):
    assert ids(get(calls, as_="reseller", phone="PJSIP/alice")) == []


@pytest.mark.parametrize(
    "who,phone",
    [
        ("acme", "PJSIP/nobody"),
        ("acme", "9999"),
        ("beta", "PJSIP/alice"),
        ("reseller", "PJSIP/erin"),
        ("reseller", "3001"),
        ("acme", "PJSIP/trunk1"),
    ],
)
def test_unknown_or_invisible_phone_is_400(calls, who, phone):
    assert errors(get(calls, as_=who, phone=phone)) == [("400", "phone")]


def test_empty_phone_means_not_set(calls):
    assert ids(get(calls, phone="")) == ACME


def test_filters_combine(calls):
    assert ids(get(calls, direction="internal", phone="1001", dnumber="2001", dmatch="exact")) == [
        "170.1",
        "170.2",
    ]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"direction": "in"},
        {"recursive": "1"},
        {"callid": "nope"},
        {"names": "1"},
        {"sort": "dnumber", "descending": "1"},
    ],
)
def test_count_is_the_number_of_legs_the_list_would_return(calls, params):
    assert get(calls, count="1", **params)["data"] == {"count": len(ids(get(calls, **params)))}


def test_count_0_returns_the_list(calls):
    assert ids(get(calls, count="0")) == ACME


def test_count_for_the_whole_system(calls):
    assert get(calls, as_="admin", customer="system", count="1")["data"] == {"count": len(BY_ID)}
