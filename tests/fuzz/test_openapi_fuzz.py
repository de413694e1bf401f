"""Schemathesis over docs/openapi.json against the real server: valid and invalid input,
anonymous and authenticated, always a well-formed envelope and never a 500."""

from __future__ import annotations

import functools
import json
import urllib.request
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from pbxcontrol.plugins.active_calls import params
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(DOC)


def test_every_served_function_is_described(service):
    """A function missing from docs/openapi.json would go unfuzzed (calls/active/scopes once
    did): the paths described are exactly the functions the service serves."""
    rt, _ = service
    served = {f"/api/json/{name}/" for name in rt.api.functions}
    served |= {f"/api/stream/{name}/" for name in rt.api.streams}
    served |= {"/health", "/metrics"}  # not functions, but served and fuzzed (test_ops_fuzz)
    assert set(json.loads(DOC.read_text())["paths"]) == served


def test_the_lists_described_choices_are_the_ones_it_accepts():
    """Fuzzing sends the enums as valid values: they are calls/active/list's, no more, no less
    (a value it accepts but the description lacks would only ever be sent as garbage)."""
    accepted = {
        "sort": params.SORT_FIELDS,
        "direction": {"", *params.DIRECTIONS},
        **{match: {"", *params.MATCH_MODES} for match, _ in params.TEXT_FILTERS.values()},
    }
    for path, item in json.loads(DOC.read_text())["paths"].items():
        if not path.endswith("/calls/active/list/"):
            continue
        for method, operation in item.items():
            described = {p["name"]: p["schema"] for p in operation.get("parameters", [])}
            for content in operation.get("requestBody", {}).get("content", {}).values():
                described.update(content["schema"]["properties"])
            for name, values in accepted.items():
                assert set(described[name]["enum"]) == values, (path, method, name)


def check_envelope(response) -> None:
    body = response.json()
    codes = [entry["code"] for entry in body["responses"]]
    assert "500" not in codes, body
    assert len(set(codes)) == 1, body
    assert ("data" in body) == (codes == ["200"]), body


# The stream's answer never ends: tests/fuzz/test_stream_fuzz.py reads it bounded. /health and
# /metrics are not the envelope: tests/fuzz/test_ops_fuzz.py.
@schema.exclude(path=["/api/stream/calls/active/list/", "/health", "/metrics"]).parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_input_gets_a_conforming_envelope(case, service):
    _, base = service
    checks = [response_schema_conformance, content_type_conformance, status_code_conformance]
    response = case.call(base_url=base)
    case.validate_response(response, checks=checks)
    check_envelope(response)
    # The same input from a known person reaches validation and the query, by password, by
    # token and by a read-only token (user/login included). user/logout revokes the token it
    # gets: it gets a fresh one each time, so the shared ones stay good.
    logout = case.path == "/api/json/user/logout/"
    for user in ("admin", "acme", "token", "read"):
        if user in ("token", "read"):
            scope = "read" if user == "read" else "all"
            token = new_token(base, scope) if logout else token_of(base, scope)
            credentials = {"auth_token": token}
        else:
            credentials = {"auth_username": user, "auth_password": f"{user}-pass"}
        params = case.query if case.query is not None else case.body
        if isinstance(params, dict):
            for name in ("auth_username", "auth_password", "auth_token"):
                params.pop(name, None)
            params.update(credentials)
        response = case.call(base_url=base)
        case.validate_response(response, checks=checks)
        check_envelope(response)


@functools.cache
def token_of(base: str, scope: str = "all") -> str:
    """A token of acme's from user/login (one per run and scope: a login costs a KDF)."""
    return new_token(base, scope)


def new_token(base: str, scope: str = "all") -> str:
    query = f"auth_username=acme;auth_password=acme-pass;token=1;scope={scope}"
    with urllib.request.urlopen(f"{base}/api/json/user/login/?{query}") as resp:
        return json.load(resp)["data"]["auth_token"]
