"""Hostile bytes at recording/recordings/start, stop and pause over a raw socket: always the
envelope, never data or a 500, and a leg the person may not see is never acted on (the same
404 as a leg that does not exist). The fuzz service's machine 1 is held by an intent worker
whose ARI records nothing, so an accepted request there is a 403 (no customer there may
record), a 409 or a 503."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.test_raw_http import assert_envelope, encode, raw_values, request

PATHS = [f"/api/json/recording/recordings/{verb}/" for verb in ("start", "stop", "pause")]
NAMES = ["uniqueid", "channel", "machine", "auth_username", "auth_password"]
CODES = ("204", "400", "401", "402", "403", "404", "405", "409", "413", "429", "503")
KNOWN = st.sampled_from(["1.1", "1.2", "2.1", "3.1", "4.1", "5.1", "1", "2", "0"])
pairs = st.lists(st.tuples(st.sampled_from(NAMES), raw_values | KNOWN), max_size=8)


@given(
    path=st.sampled_from(PATHS),
    pairs=pairs,
    sep=st.sampled_from([";", "&"]),
    user=st.sampled_from(["acme", "reseller", "admin", None]),
    method=st.sampled_from(["GET", "POST"]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_recording_requests_always_get_an_envelope(service, path, pairs, sep, user, method):
    _, base = service
    if user:
        pairs = [("auth_username", user), ("auth_password", f"{user}-pass"), *pairs]
    query = encode(pairs, sep)
    if method == "GET":
        result = request(base, "GET", f"{path}?{query}")
    else:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        result = request(base, "POST", path, query.encode(), form)
    assert_envelope(*result, allowed=CODES)


def test_acme_never_reaches_a_leg_outside_its_subtree(service):
    _, base = service
    auth = "auth_username=acme;auth_password=acme-pass"
    for path in PATHS:
        for other in ("3.1", "4.1", "5.1", "9.9"):  # Beta's, Gamma's, no customer's, none
            answer = request(base, "GET", f"{path}?{auth};uniqueid={other}")
            body = assert_envelope(*answer, CODES)
            assert [(r["code"], r["key"]) for r in body["responses"]] == [("404", "uniqueid")]
