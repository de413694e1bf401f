"""Hostile bytes at calls/hangup over a raw socket: always the envelope, never data or a 500,
and only the legs the person may see are ever hung up."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.test_raw_http import assert_envelope, encode, raw_values, request

PATH = "/api/json/calls/hangup/"
NAMES = ["callid", "uniqueid", "machine", "auth_username", "auth_password", "auth_token", "x"]
CODES = ("204", "400", "401", "402", "404", "405", "413", "429", "503")
KNOWN = st.sampled_from(["1.1", "2.1", "3.1", "4.1", "5.1", "1", "2"])  # the fuzz legs
pairs = st.lists(st.tuples(st.sampled_from(NAMES), raw_values | KNOWN), max_size=8)


@given(
    pairs=pairs,
    sep=st.sampled_from([";", "&"]),
    user=st.sampled_from(["acme", "reseller", "admin", None]),
    method=st.sampled_from(["GET", "POST"]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_hangups_always_get_an_envelope(service, pairs, sep, user, method):
    _, base = service
    if user:
        pairs = [("auth_username", user), ("auth_password", f"{user}-pass"), *pairs]
    query = encode(pairs, sep)
    if method == "GET":
        result = request(base, "GET", f"{PATH}?{query}")
    else:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        result = request(base, "POST", PATH, query.encode(), form)
    assert_envelope(*result, allowed=CODES)


def test_acme_never_reaches_a_leg_outside_its_subtree(service):
    _, base = service
    auth = "auth_username=acme;auth_password=acme-pass"
    for other in ("3.1", "4.1", "5.1"):  # Beta's, Gamma's, and a leg no customer owns
        body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};callid={other}"), CODES)
        assert [r["code"] for r in body["responses"]] == ["404"]
    body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};callid=1.1"), CODES)
    assert [r["code"] for r in body["responses"]] == ["204"]
