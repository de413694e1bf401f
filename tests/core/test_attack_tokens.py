"""The security review's findings about tokens (issue 23, SPEC §13), each played as an attacker
or an operator would meet it: against the WSGI app, a real Chromium on the wallboard, and two
`pbxcontrol serve` processes sharing one database (SQLite and PostgreSQL).

Each of these tests failed on the code before §13 (see the issue's closing note):
- a token carried every privilege: a wallboard's token could hang calls up;
- the wallboard put its token in the stream's URL, where proxies log it;
- a token lasted an hour and could not be renewed;
- there was no logout: a leaked token stayed good until it expired;
- the signing key was read once per process: rotating it needed every process restarted.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import jwt
import pytest

from tests.conftest import build_provisioned, cli, start_server, stop_server, write_config
from tests.plugins.active_calls.stream_support import serving

LOGIN = "/api/json/user/login/"
LOGOUT = "/api/json/user/logout/"
LIST = "/api/json/calls/active/list/"
HANGUP = "/api/json/calls/hangup/"
STREAM = "/api/stream/calls/active/list/"
CREDENTIALS = ("auth_token", "auth_password", "auth_username")


def code(answer: dict) -> str:
    return answer["responses"][0]["code"]


def token(app, user: str = "acme", **extra: str) -> str:
    params = {"auth_username": user, "auth_password": f"{user}-pass", "token": "1", **extra}
    answer = app.get(LOGIN, params).json
    assert code(answer) == "200", answer
    return answer["data"]["auth_token"]


def test_a_wallboards_read_token_cannot_hang_up(app):
    wallboard = token(app, scope="read")
    # It reads what a wallboard reads...
    assert code(app.get(LIST, {"auth_token": wallboard}).json) == "200"
    # ...but a thief who lifts it off the screen's machine cannot end calls: 402, the
    # function never runs (a full token of the same person reaches it: 404, no such call).
    refused = app.get(HANGUP, {"auth_token": wallboard, "callid": "c1"}).json
    assert code(refused) == "402", refused
    assert "scope=read" in refused["responses"][0]["message"]
    full = app.get(HANGUP, {"auth_token": token(app), "callid": "c1"}).json
    assert code(full) == "404", full


def test_the_wallboard_puts_no_credential_in_a_url(rt, browser):
    """What the page asks the server for, as a proxy's access log records it: no URL carries
    a password or a token; the stream is opened with a one-use ticket."""
    with serving(rt) as (host, port):
        page = browser.page
        page.goto(f"http://{host}:{port}/wallboard/")
        page.fill("input[name=auth_username]", "acme")
        page.fill("input[name=auth_password]", "acme-pass")
        page.press("input[name=auth_password]", "Enter")
        page.locator("#live.on").wait_for(timeout=10000)
        streams = [u for u in browser.requests if STREAM in u]
        assert streams, browser.requests
        for url in browser.requests:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            assert not set(query) & set(CREDENTIALS), url
        for url in streams:
            assert "ticket" in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query), url
        login = [body for url, body in browser.posted if LOGIN in url]
        assert login and "scope=read" in login[0], browser.posted
        browser.check_clean()


def test_a_token_can_be_renewed_and_keeps_its_scope(app):
    first = token(app, scope="read")
    time.sleep(1.1)  # a second later: the renewed token ends later
    renewed = app.get(LOGIN, {"auth_token": first, "token": "1"}).json
    assert code(renewed) == "200", renewed
    second = renewed["data"]["auth_token"]
    old, new = (
        jwt.decode(first, options={"verify_signature": False}),
        jwt.decode(second, options={"verify_signature": False}),
    )
    assert new["scope"] == old["scope"] == "read"
    assert new["exp"] > old["exp"] and new["jti"] != old["jti"]
    assert code(app.get(LIST, {"auth_token": second}).json) == "200"
    assert code(app.get(HANGUP, {"auth_token": second, "callid": "c1"}).json) == "402"
    # A read token never renews into one that may do more.
    wider = app.get(LOGIN, {"auth_token": second, "token": "1", "scope": "all"}).json
    assert (code(wider), wider["responses"][0]["key"]) == ("400", "scope")


# -- two API processes on one database ---------------------------------------------------------


def get(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture
def two_apis(tmp_path, db_url):
    """Two `pbxcontrol serve` processes (no machines: the API only) on the test's database,
    provisioned: (config of the first, base URL of each)."""
    build_provisioned(write_config(tmp_path, db=db_url)).close()
    procs, bases, configs = [], [], []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            configs.append(write_config(tmp_path / name, db=db_url))
            proc, base, _lines = start_server(configs[-1])
            procs.append(proc)
            bases.append(base)
        yield configs[0], bases
    finally:
        for proc in procs:
            stop_server(proc)


def login_on(base: str, **extra: str) -> str:
    answer = get(base, LOGIN, auth_username="acme", auth_password="acme-pass", token="1", **extra)
    assert code(answer) == "200", answer
    return answer["data"]["auth_token"]


def test_logout_revokes_that_token_on_another_process_within_a_second(two_apis):
    _, (first, second) = two_apis
    stolen, other = login_on(first), login_on(first)
    assert code(get(second, LIST, auth_token=stolen)) == "200"
    out = get(first, LOGOUT, auth_token=stolen)
    assert code(out) == "204", out
    revoked = time.monotonic()
    while code(get(second, LIST, auth_token=stolen)) != "401":
        assert time.monotonic() - revoked < 1.0, "the other process still takes the token"
        time.sleep(0.05)
    assert code(get(first, LIST, auth_token=stolen)) == "401"
    # Only that token: the person's other token (another screen) goes on working.
    assert code(get(second, LIST, auth_token=other)) == "200"


def kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def test_a_rotated_key_signs_on_a_running_process_within_10_s_and_old_tokens_live_on(two_apis):
    config, (first, second) = two_apis
    before = login_on(second)
    rotated = cli(config, "rotate-token-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "signs every new token" in rotated.stdout
    done = time.monotonic()
    while kid(login_on(second)) == kid(before):
        assert time.monotonic() - done < 10.0, "the running process still signs with the old key"
        time.sleep(0.5)
    fresh = login_on(second)
    for base in (first, second):  # the old key still verifies; the new one everywhere
        assert code(get(base, LIST, auth_token=before)) == "200"
        assert code(get(base, LIST, auth_token=fresh)) == "200"
