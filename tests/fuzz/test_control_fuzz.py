"""Hostile bytes at calls/make and calls/monitor over a raw socket: always the envelope (data
only with 200), never a 500; a leg the person may not see is never monitored (the same 404 as
a leg that does not exist), and nobody without `monitor` gets past 402. The fuzz service's
machine 1 is held by an intent worker whose ARI answers no originate: an accepted request
there is a 503."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.test_raw_http import assert_envelope, encode, raw_values, request

MAKE, MONITOR = "/api/json/calls/make/", "/api/json/calls/monitor/"
NAMES = {
    MAKE: ["stype", "snumber", "ctype", "cnumber", "customer", "callerid1", "callerid2",
           "answer1", "answer2", "delay", "wait", "machine", "card", "screen1"],
    MONITOR: ["uniqueid", "channel", "mode", "phone", "answer", "machine"],
}  # fmt: skip
CODES = ("200", "204", "400", "401", "402", "403", "404", "405", "409", "413", "429", "503")
KNOWN = st.sampled_from(
    ["1.1", "1.2", "2.1", "3.1", "1001", "1002", "phone", "listen", "barge", "1", "2", "0"]
)


@st.composite
def queries(draw):
    path = draw(st.sampled_from([MAKE, MONITOR]))
    names = st.sampled_from([*NAMES[path], "auth_username", "auth_password"])
    return path, draw(st.lists(st.tuples(names, raw_values | KNOWN), max_size=8))


@given(
    query=queries(),
    sep=st.sampled_from([";", "&"]),
    user=st.sampled_from(["acme", "admin", "panel", None]),
    method=st.sampled_from(["GET", "POST"]),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_control_requests_always_get_an_envelope(service, query, sep, user, method):
    _, base = service
    path, pairs = query
    if user:
        pairs = [("auth_username", user), ("auth_password", f"{user}-pass"), *pairs]
    encoded = encode(pairs, sep)
    if method == "GET":
        result = request(base, "GET", f"{path}?{encoded}")
    else:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        result = request(base, "POST", path, encoded.encode(), form)
    body = assert_envelope(*result, allowed=CODES)
    assert ("data" in body) == (body["responses"][0]["code"] == "200"), body


def test_monitor_never_reaches_past_privilege_or_scope(service):
    _, base = service
    for user in ("acme", "panel"):  # no `monitor` privilege
        auth = f"auth_username={user};auth_password={user}-pass;phone=1001"
        body = assert_envelope(*request(base, "GET", f"{MONITOR}?{auth};uniqueid=1.1"), CODES)
        assert [r["code"] for r in body["responses"]] == ["402"]
    auth = "auth_username=admin;auth_password=admin-pass;phone=1001"
    for other in ("5.1", "9.9"):  # no customer's, none
        body = assert_envelope(*request(base, "GET", f"{MONITOR}?{auth};uniqueid={other}"), CODES)
        assert [(r["code"], r["key"]) for r in body["responses"]] == [("404", "uniqueid")]
