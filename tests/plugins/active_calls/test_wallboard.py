"""The wallboard page (/wallboard/) and calls/active/scopes, the scope chooser's function."""

from __future__ import annotations

import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bottle
import jwt
import pytest
import webtest

from pbxcontrol.http import static
from tests.conftest import LIST, build_provisioned, write_config
from tests.plugins.active_calls.conftest import CALLS, leg
from tests.plugins.active_calls.stream_support import serving, write_legs

SCOPES = "/api/json/calls/active/scopes/"
WALLBOARD = Path(__file__).resolve().parents[3] / "plugins" / "active_calls" / "wallboard"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


# -- the page -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,content_type",
    [
        ("/wallboard/", "text/html; charset=utf-8"),
        ("/wallboard/index.html", "text/html; charset=utf-8"),
        ("/wallboard/wallboard.js", "text/javascript; charset=utf-8"),
        ("/wallboard/wallboard.css", "text/css; charset=utf-8"),
        ("/wallboard/favicon.svg", "image/svg+xml"),
    ],
)
def test_each_file_has_its_content_type_csp_and_cache_control(calls, path, content_type):
    resp = calls.get(path)
    assert resp.status_int == 200
    assert resp.headers["Content-Type"] == content_type
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (
        resp.body == (WALLBOARD / (path.removeprefix("/wallboard/") or "index.html")).read_bytes()
    )


def test_wallboard_without_slash_redirects_to_the_page(calls):
    resp = calls.get("/wallboard")
    assert resp.status_int == 301
    assert resp.headers["Location"].endswith("/wallboard/")


def test_unchanged_file_is_a_304_by_etag(calls):
    etag = calls.get("/wallboard/wallboard.js").headers["ETag"]
    resp = calls.get("/wallboard/wallboard.js", headers={"If-None-Match": etag})
    assert resp.status_int == 304 and resp.body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/wallboard/nothing.js",
        "/wallboard/../setup.cfg",
        "/wallboard/%2e%2e/%2e%2e/setup.cfg",
        "/wallboard/..%2f..%2f__init__.py",
        "/wallboard//etc/passwd",
        "/wallboard/%2Fetc%2Fpasswd",
        "/wallboard/./index.html",
        "/wallboard/.hidden",
    ],
)
def test_only_the_pages_files_are_served_never_a_path_outside(calls, path):
    resp = calls.get(path, expect_errors=True)
    assert resp.status_int in (301, 404), resp
    assert b"[options]" not in resp.body and b"root:" not in resp.body and b"def " not in resp.body


def test_other_methods_are_refused(calls):
    assert calls.post("/wallboard/", expect_errors=True).status_int == 405


def test_page_has_the_login_form_inputs_and_loads_nothing_from_another_host():
    html = (WALLBOARD / "index.html").read_text()
    found = tags(html)
    inputs = {attrs.get("name"): attrs for tag, attrs in found if tag == "input"}
    assert {"auth_username", "auth_password"} <= set(inputs)
    assert inputs["auth_password"]["type"] == "password"
    assert any(tag == "button" and attrs.get("type") == "submit" for tag, attrs in found)
    for tag, attrs in found:
        for attr in ("src", "href", "action"):
            value = attrs.get(attr) or ""
            assert "//" not in value and not value.startswith("/"), (tag, attrs)
        assert "style" not in attrs and not any(a.startswith("on") for a in attrs), (tag, attrs)
    assert "<script>" not in html  # no inline script: the CSP would refuse it
    for text in (WALLBOARD / "wallboard.js").read_text(), (WALLBOARD / "wallboard.css").read_text():
        assert not re.search(r"https?://", text)
        assert "@import" not in text and "@font-face" not in text


def test_static_files_are_a_fixed_set_without_dot_files_or_symlinks(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / ".secret.txt").write_text("no")
    (tmp_path / "notes.md").write_text("unknown type")
    (tmp_path / "link.txt").symlink_to(tmp_path / "index.html")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.css").write_text("p{}")
    assert sorted(static.files_of(tmp_path)) == ["index.html", "sub/a.css"]
    app = bottle.Bottle()
    static.mount(app, "board", tmp_path)
    test = webtest.TestApp(app)
    assert test.get("/board/sub/a.css").content_type == "text/css"
    for path in ("/board/.secret.txt", "/board/notes.md", "/board/link.txt"):
        assert test.get(path, expect_errors=True).status_int == 404


def test_a_static_prefix_must_be_one_segment_and_have_an_index(tmp_path):
    with pytest.raises(ValueError, match="one lowercase path segment"):
        static.mount(bottle.Bottle(), "api/json", tmp_path)
    with pytest.raises(ValueError, match="no index.html"):
        static.mount(bottle.Bottle(), "board", tmp_path)


def test_the_wheel_carries_the_page():
    config = (Path(__file__).resolve().parents[3] / "setup.cfg").read_text()
    assert re.search(r"^pbxcontrol\.plugins\.active_calls = wallboard/\*", config, re.M)


# -- calls/active/scopes ------------------------------------------------------------------


def scopes(app, who: str, **params: str) -> dict:
    return app.get(
        SCOPES, params={"auth_username": who, "auth_password": f"{who}-pass", **params}
    ).json


def test_reseller_gets_its_subtree_with_depths_and_no_system(calls):
    body = scopes(calls, "reseller")
    assert body["responses"][0]["code"] == "200"
    data = body["data"]
    assert (data["username"], data["customer"], data["system"]) == ("reseller", 2, False)
    assert "actions" in data["privileges"]
    assert data["customers"] == [
        {"id": 2, "name": "Reseller A", "parent": 0, "depth": 0},
        {"id": 3, "name": "Acme Ltd", "parent": 2, "depth": 1},
        {"id": 4, "name": "Beta GmbH", "parent": 2, "depth": 1},
        {"id": 5, "name": "Acme Branch", "parent": 3, "depth": 2},
    ]


def test_system_owner_may_choose_the_whole_system(calls):
    data = scopes(calls, "admin")["data"]
    assert data["system"] is True
    assert {c["id"] for c in data["customers"]} == {1, 2, 3, 4, 5, 6, 7}


def test_plain_user_sees_only_its_own_customer_and_no_actions(calls):
    data = scopes(calls, "beta")["data"]
    assert data["customers"] == [{"id": 4, "name": "Beta GmbH", "parent": 0, "depth": 0}]
    assert data["privileges"] == ["user"] and data["system"] is False


def test_scopes_needs_the_lists_privileges_and_valid_credentials(calls):
    assert scopes(calls, "panel")["responses"][0]["code"] == "402"
    bad = calls.get(SCOPES, params={"auth_username": "acme", "auth_password": "nope"}).json
    assert bad["responses"][0]["code"] == "401" and "data" not in bad


def test_scopes_accepts_a_token(calls):
    login = calls.post(
        "/api/json/user/login/",
        {"auth_username": "acme", "auth_password": "acme-pass", "token": "1"},
    ).json
    token = login["data"]["auth_token"]
    data = calls.get(SCOPES, params={"auth_token": token}).json["data"]
    assert [c["id"] for c in data["customers"]] == [3, 5]


# -- the page in a real Chromium: read-only token, renewal, tickets, logout (SPEC §13) ------

STREAM = "/api/stream/calls/active/list/"
LOGIN = "/api/json/user/login/"
CREDENTIALS = {"auth_token", "auth_password", "auth_username"}


@pytest.fixture
def board(database, databases, tmp_path, request):
    """A provisioned runtime with live legs, served on loopback: (runtime, base URL)."""
    lifetime = getattr(request, "param", 3600)
    with databases.fresh(database, tmp_path) as url:
        config = write_config(tmp_path, db=url)
        config.write_text(
            config.read_text().replace("[http]\n", f"[http]\ntoken_lifetime = {lifetime}\n", 1)
        )
        rt = build_provisioned(config)
        write_legs(rt, 1, upsert=[r for r in CALLS if r["machine"] == 1])
        with serving(rt) as (host, port):
            yield rt, f"http://{host}:{port}"
        rt.close()


def sign_in(browser, base: str, who: str = "acme") -> None:
    page = browser.page
    page.goto(base + "/wallboard/")
    page.fill("input[name=auth_username]", who)
    page.fill("input[name=auth_password]", f"{who}-pass")
    page.press("input[name=auth_password]", "Enter")
    page.locator("#live.on").wait_for(timeout=10000)


def held_token(browser) -> str:
    """The token the page keeps (its tab's sessionStorage)."""
    saved = browser.page.evaluate("sessionStorage.getItem('pbxcontrol.wallboard')")
    return json.loads(saved)["token"]


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def queries(browser, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(u).query) for u in browser.requests if path in urlsplit(u).path]


def test_the_page_holds_a_read_token_and_opens_streams_with_tickets(board, browser):
    rt, base = board
    sign_in(browser, base)
    assert claims(held_token(browser))["scope"] == "read"
    streams = queries(browser, STREAM)
    assert streams and all("ticket" in q and not CREDENTIALS & set(q) for q in streams)
    # acme may hang up: the button is there, the password is asked for in the dialog.
    browser.page.locator("#rows button.hangup").first.wait_for(timeout=5000)
    browser.check_clean()


@pytest.mark.parametrize("board", [6], indirect=True)
def test_the_page_renews_its_token_before_it_expires_and_stays_live(board, browser):
    rt, base = board
    sign_in(browser, base)
    first = held_token(browser)
    time.sleep(14)  # more than two lifetimes
    page = browser.page
    assert page.locator("#live.on").count() == 1 and page.locator("#login").is_hidden()
    now = held_token(browser)
    assert claims(now)["exp"] >= claims(first)["exp"] + 6 and claims(now)["scope"] == "read"
    renewals = [parse_qs(body) for url, body in browser.posted if urlsplit(url).path == LOGIN]
    assert len([r for r in renewals if "auth_token" in r]) >= 2, renewals
    assert all("auth_password" not in r for r in renewals[1:])
    # The stream moved to tickets of the new tokens and still brings changes.
    assert len(queries(browser, STREAM)) >= 3
    write_legs(rt, 1, upsert=[leg("900.1", "900.1", 900, scustomer=3, dcustomer=3)])
    page.locator('#rows tr[data-uniqueid="900.1"]').wait_for(timeout=5000)
    browser.check_clean()


def test_log_out_revokes_the_token_on_the_server(board, browser):
    rt, base = board
    sign_in(browser, base)
    token = held_token(browser)
    browser.page.click("#logout")
    browser.page.locator("#login").wait_for(state="visible", timeout=5000)
    app = webtest.TestApp(rt.app)
    deadline = time.monotonic() + 5
    while app.get(LIST, {"auth_token": token}).json["responses"][0]["code"] != "401":
        assert time.monotonic() < deadline, "the token still works after Log out"
        time.sleep(0.1)
    browser.check_clean()


def test_a_full_token_in_the_fragment_is_traded_for_a_read_token(board, browser):
    rt, base = board
    app = webtest.TestApp(rt.app)
    params = {"auth_username": "acme", "auth_password": "acme-pass", "token": "1"}
    full = app.get(LOGIN, params).json["data"]["auth_token"]
    browser.page.goto(f"{base}/wallboard/#auth_token={full}")
    browser.page.locator("#live.on").wait_for(timeout=10000)
    held = held_token(browser)
    assert held != full and claims(held)["scope"] == "read"
    browser.check_clean()


# -- a machine nobody records, in Chromium (SPEC §12) ----------------------------------------


def wait_for(condition, timeout: float, what: str) -> None:
    """Polled from here: the page's CSP (no eval) refuses Playwright's wait_for_function."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_wallboard_greys_a_silent_machines_rows_and_says_which_since_when(
    database, databases, tmp_path, browser
):
    from pbxcontrol.db import unrecorded
    from tests.plugins.active_calls.test_unrecorded import ON_2, renew

    with databases.fresh(database, tmp_path) as url:
        rt = build_provisioned(write_config(tmp_path, db=url))
        for machine in (1, 2):
            write_legs(rt, machine, upsert=[r for r in CALLS if r["machine"] == machine])
            renew(rt, machine)
        page = browser.page
        with serving(rt, watch=unrecorded.Watch(2.0, 3600)) as (host, port):
            sign_in(browser, f"http://{host}:{port}", "admin")
            rows = page.locator("#rows tr")
            wait_for(lambda: rows.count() == len(CALLS), 5, "the rows")
            assert page.locator("#rows tr.unrecorded").count() == 0
            assert page.locator("#unrecorded").is_hidden()

            renew(rt, 1)
            since = renew(rt, 2, age=4.5)  # silent for more than 2 x takeover_seconds
            grey = page.locator("#rows tr.unrecorded")
            wait_for(lambda: grey.count() == len(ON_2), 3, "machine 2's rows greyed")
            assert sorted(grey.evaluate_all("rs => rs.map(r => r.dataset.uniqueid)")) == ON_2
            assert set(grey.evaluate_all("rs => rs.map(r => r.dataset.machine)")) == {"2"}
            assert float(grey.first.evaluate("r => getComputedStyle(r).opacity")) < 0.6
            banner = page.locator("#unrecorded")
            banner.wait_for(state="visible", timeout=2000)
            shown = page.evaluate(f"new Date({since} * 1000).toLocaleString([], {{hour12: false}})")
            page.wait_for_function(
                "t => document.getElementById('unrecorded-text').textContent.includes(t)",
                arg=f"machine 2 since {shown}",
                timeout=3000,
            )
            assert "NOT RECORDED" in banner.inner_text()
            assert rows.count() == len(CALLS)  # kept: they may well be up
            if os.environ.get("PBXCONTROL_UNRECORDED_SCREENSHOT"):
                page.screenshot(path=os.environ["PBXCONTROL_UNRECORDED_SCREENSHOT"])

            with rt.engine.begin() as conn:  # a recorder takes machine 2 and reconciles
                renew(rt, 2)
                unrecorded.vouch(conn, 2)
            banner.wait_for(state="hidden", timeout=3000)
            assert page.locator("#rows tr.unrecorded").count() == 0
            browser.check_clean()
        rt.close()


# -- the per-call actions: which buttons, and a recording's state on the row (SPEC §11.8) ----


def call_buttons(page, callid: str) -> list[str]:
    rows = page.locator(f'#rows tr[data-callid="{callid}"]')
    return rows.locator("button").evaluate_all("bs => bs.map(b => b.textContent)")


def settle(page, callid: str, expected: list[str], what: str, among=None) -> None:
    """The call's buttons (those `among`, if given) become `expected` within 3 s."""
    deadline = time.monotonic() + 3
    while (shown := [b for b in call_buttons(page, callid) if not among or b in among]) != expected:
        assert time.monotonic() < deadline, f"{what}: {shown} != {expected}"
        time.sleep(0.05)


RECORDING = {"Record": "Rec", "Pause rec": "Rec", "Resume rec": "Rec", "Stop rec": "Rec"}


def test_the_buttons_follow_the_persons_privileges(board, browser):
    """From calls/active/scopes' privileges: acme (`actions`) may redirect, record (or stop a
    recording) and hang up, but not monitor; the system owner may monitor too; beta (`user`)
    gets no button."""
    _rt, base = board
    page = browser.page
    for who, expected in (
        ("acme", ["Redirect", "Rec", "Hang up"]),
        ("admin", ["Redirect", "Rec", "Monitor", "Hang up"]),
        ("beta", []),
    ):
        sign_in(browser, base, who)
        page.locator("#rows tr").first.wait_for(timeout=5000)
        shown = page.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.callid)")
        time.sleep(0.5)  # rendered with the privileges: nothing more comes
        for callid in sorted(set(shown)):
            shown = list(dict.fromkeys(RECORDING.get(b, b) for b in call_buttons(page, callid)))
            assert shown == expected, (who, callid, shown)
        page.click("#logout")
        page.locator("#login").wait_for(state="visible", timeout=5000)
    browser.check_clean()


def test_a_recording_shows_on_its_row_and_turns_record_into_pause_and_stop(board, browser):
    rt, base = board
    page = browser.page
    sign_in(browser, base)
    alice = next(r for r in CALLS if r["uniqueid"] == "100.1")
    row = page.locator('#rows tr[data-uniqueid="100.1"]')
    row.wait_for(timeout=5000)
    assert call_buttons(page, "100.1") == ["Redirect", "Record", "Hang up"]
    path = "/var/spool/asterisk/recording/3/2026/12/06/100.1-1.wav"
    for fields, badge, buttons in (
        ({"recording": path}, "REC", ["Pause rec", "Stop rec"]),
        ({"recording": path, "recording_paused": 1}, "REC paused", ["Resume rec", "Stop rec"]),
        ({"recording": "", "recording_paused": 0}, None, ["Record"]),
    ):
        write_legs(rt, 1, update=[dict(alice, **fields)])
        if badge is None:
            row.locator(".badge.rec").wait_for(state="detached", timeout=3000)
        else:
            row.locator(".badge.rec", has_text=badge).wait_for(timeout=3000)
            assert row.locator(".badge.rec").get_attribute("title") == path
        settle(page, "100.1", buttons, str(fields), among=RECORDING)
    browser.check_clean()


def test_an_action_the_server_cannot_carry_out_says_so(board, browser):
    """No recording process holds the machine here: the intent expires after 2 s and the API
    answers 503 (SPEC §11.2): the board shows that answer's message, not nothing."""
    _rt, base = board
    page = browser.page
    sign_in(browser, base)
    page.locator('#rows tr[data-uniqueid="100.1"] button.redirect').click()
    page.fill("#confirm-number", "1003")
    page.fill("#confirm-password", "acme-pass")
    with page.expect_response(lambda r: "/calls/redirect/" in r.url) as got:
        page.click("#confirm-hangup")
    answer = got.value.json()["responses"][0]
    assert answer["code"] == "503", answer
    page.locator("#toast.bad", has_text=answer["message"]).wait_for(timeout=3000)
    assert page.locator("#toast").inner_text().startswith("The call's machine did not carry")
    browser.check_clean()
