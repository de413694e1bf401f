"""/health and /metrics as docs/openapi.json describes them, from a client in `[http]
ops_allow` and from one outside it, with hostile headers; and the methods no path serves."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pbxcontrol.service.server import listen, make_server
from tests.fuzz.test_raw_http import method_refused, request

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(DOC)
CHECKS = [response_schema_conformance, content_type_conformance, status_code_conformance]
OUTSIDE = "203.0.113.9"
HTTP_METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]


@pytest.fixture(scope="module")
def outside(service):
    """The same app as `service`, as a client outside `ops_allow` reaches it (every request's
    address is OUTSIDE, as the trusted-proxy middleware would resolve it)."""
    rt, _ = service

    def app(environ, start_response):
        environ["REMOTE_ADDR"] = OUTSIDE
        return rt.app(environ, start_response)

    server = make_server(app, listen("127.0.0.1", 0), 2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


ops = schema.include(path=["/health", "/metrics"])


@ops.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_ops_endpoints_conform_for_allowed_and_outside_clients(case, service, outside):
    """Schemathesis also sends methods the document does not describe: those are 405."""
    response = case.call(base_url=service[1])  # loopback: in the default ops_allow
    case.validate_response(response, checks=CHECKS)
    if case.method.upper() != "GET":  # POST: this route's own 405 (Allow: GET)
        assert response.status_code == 405 and response.headers["allow"]
        return
    assert response.status_code in (200, 503)
    response = case.call(base_url=outside)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 403
    assert response.json()["responses"][0]["code"] == "403"


hostile_headers = st.dictionaries(
    st.sampled_from(
        ["X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host", "Client-IP", "Host"]
    ),
    st.sampled_from(["127.0.0.1", "::1", "localhost", "127.0.0.1, 127.0.0.1", "for=127.0.0.1"])
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    max_size=4,
)


@given(path=st.sampled_from(["/health", "/metrics"]), headers=hostile_headers)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_header_lets_an_outside_client_in(outside, path, headers):
    """No trusted proxy is configured: a header claiming loopback proves nothing."""
    status, ctype, raw = request(outside, "GET", path, headers=headers)
    if status == 400 and "Host" in headers:  # a Host header waitress itself refuses
        return
    assert status == 403, raw[:200]
    assert ctype == "application/json; charset=utf-8"
    assert json.loads(raw)["responses"][0]["code"] == "403"


def test_methods_no_described_path_serves_are_405_with_allow(service):
    """For every path of docs/openapi.json, each method it does not describe is refused with
    HTTP 405 and `Allow: GET, POST` (the stream: also POST, which is its envelope's 405)."""
    paths = json.loads(DOC.read_text())["paths"]
    for path, item in paths.items():
        for method in HTTP_METHODS:
            if method.lower() in item or method in ("GET", "POST"):
                continue
            method_refused(service[1], method, path)
