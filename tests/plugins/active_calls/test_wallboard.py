"""The wallboard page (/wallboard/) and calls/active/scopes, the scope chooser's function."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import bottle
import pytest
import webtest

from pbxcontrol.http import static

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


# -- a machine nobody records, in Chromium (SPEC §12) ----------------------------------------
# Debian's chromium through Playwright, as the e2e tier drives it (no Asterisk needed here):
# the `browser` fixture comes from tests/e2e/test_wallboard.py through this folder's conftest.
from tests.e2e.test_wallboard import Page  # noqa: E402
from tests.plugins.active_calls.test_unrecorded import CALLS, ON_2, renew  # noqa: E402


def wait_for(condition, timeout: float, what: str) -> None:
    """Polled from here: the page's CSP (no eval) refuses Playwright's wait_for_function."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_wallboard_greys_a_silent_machines_rows_and_says_which_since_when(
    database, databases, tmp_path, browser: Page
):
    from pbxcontrol.db import unrecorded
    from tests.conftest import build_provisioned, write_config
    from tests.plugins.active_calls.stream_support import serving, write_legs

    with databases.fresh(database, tmp_path) as url:
        rt = build_provisioned(write_config(tmp_path, db=url))
        for machine in (1, 2):
            write_legs(rt, machine, upsert=[r for r in CALLS if r["machine"] == machine])
            renew(rt, machine)
        page = browser.page
        with serving(rt, watch=unrecorded.Watch(2.0, 3600)) as (host, port):
            page.goto(f"http://{host}:{port}/wallboard/")
            page.fill("input[name=auth_username]", "admin")
            page.fill("input[name=auth_password]", "admin-pass")
            page.press("input[name=auth_password]", "Enter")
            page.locator("#live.on").wait_for(timeout=5000)
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
