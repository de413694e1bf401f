"""Hostile bytes at calls/redirect over a raw socket: always the envelope, never data or a 500,
and a leg the person may not see is never acted on (the same 404 as a leg that does not exist).
The fuzz service's machine 1 is held by an intent worker whose ARI answers no originate, so an
accepted redirect there is a 503: what matters here is that nothing else comes back."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.test_raw_http import assert_envelope, encode, raw_values, request

PATH = "/api/json/calls/redirect/"
NAMES = ["uniqueid", "cnumber", "ctype", "channel", "machine", "auth_username", "auth_password"]
CODES = ("204", "400", "401", "402", "404", "405", "409", "413", "429", "503")
KNOWN = st.sampled_from(["1.1", "1.2", "2.1", "3.1", "4.1", "5.1", "1", "2", "1002", "*67"])
pairs = st.lists(st.tuples(st.sampled_from(NAMES), raw_values | KNOWN), max_size=8)


@given(
    pairs=pairs,
    sep=st.sampled_from([";", "&"]),
    user=st.sampled_from(["acme", "reseller", "admin", None]),
    method=st.sampled_from(["GET", "POST"]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_redirects_always_get_an_envelope(service, pairs, sep, user, method):
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
    auth = "auth_username=acme;auth_password=acme-pass;cnumber=1002"
    for other in ("3.1", "4.1", "5.1", "9.9"):  # Beta's, Gamma's, no customer's, none
        body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};uniqueid={other}"), CODES)
        assert [(r["code"], r["key"]) for r in body["responses"]] == [("404", "uniqueid")]
    body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};uniqueid=1.1"), CODES)
    assert [r["code"] for r in body["responses"]] == ["503"]  # reached the holder
