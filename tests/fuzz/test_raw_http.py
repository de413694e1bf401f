"""Hostile bytes over a raw socket: whatever arrives, the answer is the JSON envelope."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, quote_from_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PATH = "/api/json/calls/active/list/"
NAMES = [
    "at",
    "auth_username",
    "auth_password",
    "customer",
    "recursive",
    "direction",
    "sort",
    "descending",
    "names",
    "callid",
    "count",
    "stype",
    "ctype",
    "dtype",
    "snumber",
    "smatch",
    "cnumber",
    "cmatch",
    "dnumber",
    "dmatch",
    "callername_number",
    "callername_match",
    "phone",
    "x",
]
GOOD = {"auth_username": "reseller", "auth_password": "reseller-pass"}


def request(
    base: str, method: str, target: str, body: bytes | None = None, headers: dict | None = None
):
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def assert_envelope(status, ctype, raw, allowed=("200", "400", "401", "402", "404", "405", "413")):
    assert status == 200, raw[:200]
    assert ctype == "application/json; charset=utf-8"
    body = json.loads(raw)
    codes = {entry["code"] for entry in body["responses"]}
    assert len(codes) == 1 and codes <= set(allowed), body
    assert ("data" in body) == (codes == {"200"})
    return body


raw_values = st.binary(max_size=40).map(quote_from_bytes) | st.text(max_size=40).map(
    lambda t: quote(t, safe="%+=,!*'()").replace(";", "").replace("&", "")
)
pairs = st.lists(st.tuples(st.sampled_from(NAMES), raw_values), max_size=12)


def encode(pairs_, sep) -> str:
    return sep.join(f"{name}={value}" for name, value in pairs_)


# Every JSON function's parameters and then some: the token functions get the list's
# parameters too, and it theirs.
FUNCTIONS = [PATH, "/api/json/user/login/", "/api/json/user/logout/", "/api/json/stream/ticket/"]
TOKEN_NAMES = ["auth_token", "token", "scope", "ticket"]


@given(
    pairs=st.lists(st.tuples(st.sampled_from(NAMES + TOKEN_NAMES), raw_values), max_size=12),
    sep=st.sampled_from([";", "&"]),
    auth=st.booleans(),
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(FUNCTIONS),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_parameters_always_get_an_envelope(service, pairs, sep, auth, method, path):
    _, base = service
    if auth:
        pairs = list(GOOD.items()) + pairs
    query = encode(pairs, sep)
    if method == "GET":
        result = request(base, "GET", f"{path}?{query}")
    else:
        result = request(
            base,
            "POST",
            path,
            query.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert_envelope(*result)


def test_invalid_utf8_and_broken_percent_encoding(service):
    _, base = service
    auth = "auth_username=admin;auth_password=admin-pass"
    for tail, expected in {
        "snumber=%ff%fe": ("400", "snumber"),  # not UTF-8
        "names=%C0%80": ("400", "names"),  # an overlong UTF-8 NUL
        "%ff=1": ("400", "\ufffd"),  # a name that is not UTF-8, shown decoded with U+FFFD
        "callid=%00": ("400", "callid"),  # NUL: PostgreSQL refuses it in text
        "sort=start%00": ("400", "sort"),
        "snumber=%": ("200", ""),  # a lone or broken escape is taken literally
        "snumber=%zz": ("200", ""),
        "=": ("200", ""),
        "==;;&&": ("200", ""),
    }.items():
        body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};{tail}"))
        assert [(r["code"], r["key"]) for r in body["responses"]] == [expected], tail


def test_repeated_parameters(service):
    _, base = service
    auth = "auth_username=admin;auth_password=admin-pass"
    same = assert_envelope(*request(base, "GET", f"{PATH}?{auth};names=1;names=1"))
    assert same["responses"][0]["code"] == "200"
    clash = assert_envelope(*request(base, "GET", f"{PATH}?{auth};sort=start;sort=uniqueid"))
    assert clash["responses"] == [
        {"code": "400", "key": "sort", "message": "is given more than once with different values"}
    ]


def test_huge_values_and_long_query_strings(service):
    _, base = service
    auth = "auth_username=admin;auth_password=admin-pass"
    body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};snumber={'9' * 5000}"))
    assert body["responses"][0] == {
        "code": "400",
        "key": "snumber",
        "message": body["responses"][0]["message"],
    }
    body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};x={'a' * 20000}"))
    assert body["responses"][0]["code"] == "413"
    many = ";".join(f"p{i}=1" for i in range(500))
    body = assert_envelope(*request(base, "GET", f"{PATH}?{auth};{many}"))
    assert body["responses"][0]["code"] == "400"
    # Beyond the server's header limit (32 KiB) the server refuses before the application,
    # still with the envelope.
    body = assert_envelope(
        *request(base, "GET", f"{PATH}?{auth};x={'a' * 40000}"), allowed=("431",)
    )
    assert body["responses"] == [
        {
            "code": "431",
            "key": "",
            "message": "Request Header Fields Too Large: exceeds max_header of 32768.",
        }
    ]
    body = assert_envelope(
        *request(base, "GET", f"{PATH}?{auth}", headers={f"X-{i}": "v" * 100 for i in range(400)}),
        allowed=("431",),
    )


def raw_exchange(base: str, data: bytes) -> bytes:
    """Send bytes as they are; read the answer until the server closes."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_raw(answer: bytes):
    head, _, raw = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type"), raw


BROKEN = {
    # what waitress refuses before the application runs -> the envelope code
    b"GET /api/json/calls/active/list/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip"
    b"\r\n\r\n": "501",
    b"GET /api/json/calls/active/list/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
    b"\r\n\r\nzz\r\n\r\n": "400",
    b"POST /api/json/calls/active/list/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n": "400",
    b"GET /api/json/calls/active/list/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n": "400",
    b"GET /api/json/calls/active/list/ HTTP/1.1\r\nHost: x\r\nX-Key: auth_password=secret"
    b"\rx\r\n\r\n": "400",
    b"\x00\xff\xfe HTTP/1.1\r\n\r\n": "400",
}


def test_requests_the_server_refuses_get_the_envelope(service):
    _, base = service
    for data, code in BROKEN.items():
        body = assert_envelope(*parse_raw(raw_exchange(base, data)), allowed=(code,))
        assert body["responses"][0]["message"].endswith("."), data
        assert "secret" not in body["responses"][0]["message"]


@given(
    line=st.binary(min_size=1, max_size=60).filter(lambda b: b"\r\n" not in b),
    header=st.binary(max_size=60).filter(lambda b: b"\r\n" not in b),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_garbage_request_heads_get_the_envelope_or_nothing(service, line, header):
    _, base = service
    answer = raw_exchange(base, line + b"\r\n" + header + b"\r\n\r\n")
    if not answer:  # a head waitress cannot even frame may be dropped; never a page of text
        return
    status, ctype, raw = parse_raw(answer)
    if status == 405:  # a method other than GET and POST: HTTP 405 (SPEC §13)
        assert answer.count(b"\r\nAllow: GET, POST\r\n") == 1
        status = 200  # the envelope is the same
    assert_envelope(
        status, ctype, raw, allowed=("200", "400", "401", "404", "405", "413", "431", "501")
    )


def method_refused(base: str, method: str, target: str) -> None:
    """HTTP 405, `Allow: GET, POST` and (but for HEAD) the 405 envelope: SPEC §13."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status == 405, (method, target, raw[:200])
    assert resp.getheader("Allow") == "GET, POST"
    if method != "HEAD":
        assert resp.getheader("Content-Type") == "application/json; charset=utf-8"
        assert json.loads(raw)["responses"][0]["code"] == "405"


TARGETS = [
    f"{PATH}?auth_username=admin;auth_password=admin-pass",
    "/api/json/calls/hangup/?auth_username=admin;auth_password=admin-pass;uniqueid=1.1",
    "/api/json/user/login/?auth_username=admin;auth_password=admin-pass;token=1",
    "/api/stream/calls/active/list/?auth_username=admin;auth_password=admin-pass",
    "/wallboard/",
    "/health",
    "/metrics",
    "/",
]
# Methods of HTTP, WebDAV and made-up ones (waitress takes any upper-case token).
METHODS = ["HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "MKCOL"]


@given(
    method=st.sampled_from(METHODS) | st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
    target=st.sampled_from(TARGETS),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_other_method_is_405_with_allow_everywhere(service, method, target):
    if method in ("GET", "POST"):
        return
    method_refused(service[1], method, target)


def test_a_head_answer_is_headers_only(service):
    """405 to HEAD, from bottle's routes and from the stream's own socket path alike."""
    for target in TARGETS:
        answer = raw_exchange(service[1], f"HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 "), (target, head)
        assert b"\r\nAllow: GET, POST" in head and body == b"", (target, answer)


def test_unknown_methods_bodies_on_get_and_malformed_forms(service):
    _, base = service
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
        method_refused(base, method, PATH)
    auth = "auth_username=admin&auth_password=admin-pass"
    body = assert_envelope(
        *request(
            base,
            "GET",
            f"{PATH}?{auth}",
            b"names=1&count=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
    )
    assert isinstance(body["data"], list)  # a body on GET is ignored
    for form in (b"\xff\xfe\x00garbage", b"auth_username", b"&&&=;=;", b"%%%%"):
        assert_envelope(
            *request(
                base, "POST", PATH, form, {"Content-Type": "application/x-www-form-urlencoded"}
            )
        )
    body = assert_envelope(
        *request(
            base, "POST", PATH, b"x" * 70000, {"Content-Type": "application/x-www-form-urlencoded"}
        )
    )
    assert body["responses"][0]["code"] == "413"
    body = assert_envelope(
        *request(
            base, "POST", PATH, json.dumps(GOOD).encode(), {"Content-Type": "application/json"}
        )
    )
    assert body["responses"][0]["code"] == "401"  # a JSON body is not a form: no credentials
