"""The live stream's parameters fuzzed: schemathesis over docs/openapi.json, and hostile bytes
over a raw socket. A good answer never ends, so every check reads the head and then either the
whole envelope or the stream's first event, and closes: a stream starts with `retry:` and a
snapshot; anything else is the JSON envelope, never a 5xx, a traceback or a page of text."""

from __future__ import annotations

import json
import socket

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.test_openapi_fuzz import schema, token_of
from tests.fuzz.test_raw_http import NAMES, assert_envelope, encode, raw_values

STREAM = "/api/stream/calls/active/list/"
CODES = ("400", "401", "402", "404", "405", "413", "429", "431", "501")
CHECKS = [response_schema_conformance, content_type_conformance, status_code_conformance]


def exchange(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data`; read the head, then the body (an envelope) or up to the stream's first
    event; close. (status, headers, what was read of the body)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            got += _recv(sock)
        head, _, body = got.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        if headers.get("content-type") == "text/event-stream":
            body = _first_event(sock, body)
        else:
            while len(body) < int(headers.get("content-length", "0")):
                body += _recv(sock)
    return int(lines[0].split()[1]), headers, body


def _first_event(sock: socket.socket, body: bytes) -> bytes:
    """Up to the end of the first event; a resumed stream that missed nothing sends none, so
    after a quiet second, what came (the `retry:` line)."""
    sock.settimeout(1.0)
    while (at := body.find(b"\nevent: ")) < 0 or body.find(b"\n\n", at) < 0:
        try:
            body += _recv(sock)
        except TimeoutError:
            return body
    return body[: body.index(b"\n\n", at) + 2]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the server closed before a whole answer"
    return chunk


def check_answer(status: int, headers: dict[str, str], body: bytes, resumed=False) -> str:
    """A stream that starts with a snapshot (resuming: the missed changes, maybe none), or
    the envelope of an error; returns the code, or "stream"."""
    assert status == 200, body[:300]
    assert b"Traceback" not in body
    if headers.get("content-type") != "text/event-stream":
        parsed = assert_envelope(status, headers.get("content-type"), body, allowed=CODES)
        return parsed["responses"][0]["code"]
    assert headers["cache-control"] == "no-cache"
    retry, _, first = body.partition(b"\n\n")
    assert retry == b"retry: 2000", body[:200]
    if not first and resumed:
        return "stream"
    fields = dict(line.split(": ", 1) for line in first.decode().strip("\n").split("\n"))
    assert fields["id"].isdigit(), fields
    assert fields["event"] in (("snapshot", "upsert", "remove") if resumed else ("snapshot",))
    data = json.loads(fields["data"])
    if fields["event"] == "snapshot":
        assert isinstance(data.get("data"), list) or set(data) == {"count"}, data
    return "stream"


def request_bytes(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@schema.include(path=STREAM).parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_stream_input_gets_a_stream_or_a_conforming_envelope(case, service):
    _, base = service
    for user in (None, "admin", "acme", "token", "ticket"):
        if user is not None:
            params = case.query if isinstance(case.query, dict) else {}
            for name in ("auth_username", "auth_password", "auth_token", "ticket"):
                params.pop(name, None)
            if user == "token":
                params["auth_token"] = token_of(base)
            elif user == "ticket":  # one use: a new one each time
                params["ticket"] = ticket_of(base)
            else:
                params.update(auth_username=user, auth_password=f"{user}-pass")
            case.query = params
        kwargs = case.as_transport_kwargs(base_url=base)
        prepared = requests.Request(
            kwargs["method"],
            kwargs["url"],
            params=kwargs.get("params"),
            headers=kwargs.get("headers"),
        ).prepare()
        extra = {k: v for k, v in prepared.headers.items() if k.lower() != "host"}
        status, headers, body = exchange(base, request_bytes("GET", prepared.path_url, extra))
        resumed = "last_event_id" in (case.query or {}) or "Last-Event-ID" in extra
        check_answer(status, headers, body, resumed)
        response = Response(
            status_code=status,
            headers={k: [v] for k, v in headers.items()},
            content=body,
            request=prepared,
            elapsed=0.0,
            verify=False,
        )
        case.validate_response(response, checks=CHECKS)


header_values = st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b)


def ticket_of(base: str) -> str:
    """A new one-use ticket of acme's (from a token: no KDF)."""
    ticket = requests.get(
        f"{base}/api/json/stream/ticket/", params={"auth_token": token_of(base)}, timeout=10
    )
    return ticket.json()["data"]["ticket"]


@given(
    pairs=st.lists(
        st.tuples(st.sampled_from([*NAMES, "last_event_id", "ticket"]), raw_values), max_size=10
    ),
    sep=st.sampled_from([";", "&"]),
    user=st.sampled_from(["acme", "reseller", "admin", None]),
    resume=st.none() | header_values,
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_stream_parameters_get_a_stream_or_the_envelope(service, pairs, sep, user, resume):
    _, base = service
    if user:
        pairs = [("auth_username", user), ("auth_password", f"{user}-pass"), *pairs]
    data = request_bytes("GET", f"{STREAM}?{encode(pairs, sep)}", {}).removesuffix(b"\r\n")
    if resume is not None:
        data += b"Last-Event-ID: " + resume + b"\r\n"
    resumed = resume is not None or any(name == "last_event_id" for name, _ in pairs)
    check_answer(*exchange(base, data + b"\r\n"), resumed=resumed)


def test_hostile_resume_ids_and_methods(service):
    _, base = service
    auth = "auth_username=acme;auth_password=acme-pass"
    for resume in ("%C2%B2", "-1", "99999999999999999999999", "%00", "1e9", "%EF%BC%91"):
        target = f"{STREAM}?{auth};last_event_id={resume}"
        answer = exchange(base, request_bytes("GET", target, {}))
        assert check_answer(*answer) == "stream", resume  # no id: a snapshot
    for header in (b"\xb2", b"\xef\xbc\x91", b"0x10", b" 1 "):
        data = request_bytes("GET", f"{STREAM}?{auth}", {}).removesuffix(b"\r\n")
        answer = exchange(base, data + b"Last-Event-ID: " + header + b"\r\n\r\n")
        assert check_answer(*answer, resumed=True) == "stream", header
    data = request_bytes("POST", f"{STREAM}?{auth}", {"Content-Length": "0"})
    assert check_answer(*exchange(base, data)) == "405"  # the stream's own: GET only
    # HTTP 405 (SPEC §13); HEAD too: tests/fuzz/test_raw_http.py (a HEAD answer has no body).
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        data = request_bytes(method, f"{STREAM}?{auth}", {"Content-Length": "0"})
        status, headers, body = exchange(base, data)
        assert status == 405 and headers["allow"] == "GET, POST", (method, body[:200])
    for bad, code in ((f"{STREAM}?{auth};customer=system", "402"), (f"{STREAM}?customer=1", "401")):
        assert check_answer(*exchange(base, request_bytes("GET", bad, {}))) == code


def test_hostile_tickets_get_the_envelope(service):
    _, base = service
    auth = "auth_username=acme;auth_password=acme-pass"
    good = ticket_of(base)
    for ticket, code in (
        ("", "401"),
        ("x" * 43, "401"),
        ("%00" * 43, "401"),
        ("A" * 5000, "401"),
        (good + "A", "401"),
        (f"{good};{auth}", "400"),  # a ticket and credentials: which one?
        (good, "stream"),
        (good, "401"),  # used
    ):
        target = f"{STREAM}?ticket={ticket}"
        assert check_answer(*exchange(base, request_bytes("GET", target, {}))) == code, ticket
