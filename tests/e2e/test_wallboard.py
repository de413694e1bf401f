"""The wallboard in a real headless Chromium (tests/browser.py), against `pbxcontrol serve`
and real SIP calls."""

from __future__ import annotations

import os
import socket
import time

import pytest
import requests

from tests.browser import Page
from tests.e2e.support import USERS, of, wait_ari

pytestmark = pytest.mark.e2e

LIVE_WITHIN = 2.0  # a row appears / disappears this long after Asterisk has / drops the leg
STREAM = "/api/stream/calls/active/list/"
SCREENSHOT = os.environ.get("PBXCONTROL_WALLBOARD_SCREENSHOT", "")


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


class Site:
    """`pbxcontrol serve` on a fixed port, so it can be stopped and started again at the same
    URL (the page's stream reconnects to it)."""

    def __init__(self, pbx) -> None:
        self.pbx = pbx
        pbx.config.write_text(pbx.config.read_text().replace("port = 0", f"port = {free_port()}"))
        pbx.start()
        self.port = pbx.port
        body = requests.get(f"http://127.0.0.1:{pbx.port}{STREAM}", timeout=5).json()
        assert body["responses"][0]["code"] == "401", body  # the stream is there, wants auth

    def stop(self) -> None:
        self.pbx.stop()

    def start(self) -> None:
        self.pbx.start()


@pytest.fixture
def server(new_pbx) -> Site:
    return Site(new_pbx(name="wallboard"))


def base(site: Site) -> str:
    return f"http://127.0.0.1:{site.port}"


def login_form(page: Page, pbx, user: str) -> None:
    page.page.goto(base(pbx) + "/wallboard/")
    page.page.fill("input[name=auth_username]", user)
    page.page.fill("input[name=auth_password]", USERS[user])
    page.page.press("input[name=auth_password]", "Enter")  # Enter submits
    page.page.locator("#board").wait_for(state="visible", timeout=5000)
    page.page.locator("#live.on").wait_for(timeout=5000)


def follow(page: Page, ari, pick, present: bool, what: str, known=frozenset(), expect=2):
    """Each leg Asterisk reports (present) or stops reporting (not present) must be shown (or
    gone) on the page within LIVE_WITHIN seconds of that moment; `pick(channels)` selects the
    legs. Returns every leg seen, once `expect` legs were shown (or all are gone)."""
    deadline = time.monotonic() + 20
    since: dict[str, float] = {}
    seen: set[str] = set(known)
    while True:
        now = time.monotonic()
        legs = pick(ari.channels())
        seen |= legs
        for leg in legs if present else seen - legs:
            since.setdefault(leg, now)
        shown = page.rows()
        done = {leg for leg in since if (leg in shown) == present}
        for leg in since.keys() - done:
            late = time.monotonic() - since[leg]
            assert late <= LIVE_WITHIN, f"{what}: {leg} after {late:.2f} s; page has {shown}"
        if done == set(since) and (len(done) >= expect if present else since and not legs):
            return seen
        assert time.monotonic() < deadline, f"{what}: timed out; Asterisk {legs}, page {shown}"
        time.sleep(0.05)


def party_legs(*endpoints: str):
    return lambda chans: {c["id"] for e in endpoints for c in of(chans, e)}


def test_wallboard_shows_a_real_call_live_and_drops_it_on_hangup(idle, server, sipp, browser):
    ari = idle
    login_form(browser, server, "admin")
    assert browser.page.locator("#scope").input_value() == "customer=system"
    sipp.phone_answers("bob", ring_ms=1500)
    sipp.phone_calls("alice", "1002")
    legs = follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    wait_ari(ari, "both legs up", lambda ch: len(of(ch, "PJSIP/bob", "Up")) == 1)
    first = browser.page.locator(f'#rows tr[data-uniqueid="{min(legs)}"]')
    first.locator(".status-up").wait_for(timeout=3000)
    assert "1001" in first.inner_text() and "Alice Smith" in first.inner_text()
    assert browser.page.locator("#t-internal").inner_text() == str(len(legs))
    browser.page.locator(".per-customer [data-customer='3']").wait_for(timeout=2000)
    if SCREENSHOT:
        browser.page.screenshot(path=SCREENSHOT)
    ari.hangup(min(legs))
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), False, "row gone", legs)
    browser.page.locator("#empty").wait_for(state="visible", timeout=2000)
    browser.check_clean()


def test_hang_up_button_ends_the_call_after_a_confirmation(idle, server, sipp, browser):
    ari = idle
    login_form(browser, server, "acme")
    sipp.phone_answers("bob", ring_ms=500)
    sipp.phone_calls("alice", "1002")
    wait_ari(ari, "both legs up", lambda ch: len(of(ch, "PJSIP/bob", "Up")) == 1)
    legs = follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    button = browser.page.locator("#rows button.hangup")
    assert button.count() == 1  # one per call, not per leg
    button.click()
    browser.page.locator("#confirm-text").wait_for(state="visible")
    assert "1001" in browser.page.locator("#confirm-text").inner_text()
    browser.page.click("#confirm button[value=cancel]")
    time.sleep(0.5)
    assert legs <= {c["id"] for c in ari.channels()}  # cancelled: nothing happened
    # The board's token may only read: a wrong password hangs nothing up...
    button.click()
    browser.page.fill("#confirm-password", "not-the-password")
    browser.page.click("#confirm-hangup")
    browser.page.locator("#toast", has_text="Wrong password").wait_for(timeout=3000)
    assert legs <= {c["id"] for c in ari.channels()}
    # ...the person's password does (Enter confirms).
    button.click()
    browser.page.fill("#confirm-password", USERS["acme"])
    browser.page.press("#confirm-password", "Enter")
    wait_ari(ari, "the call to end", lambda ch: not legs & {c["id"] for c in ch}, 5)
    browser.page.locator("#toast", has_text="Call hung up").wait_for(timeout=3000)
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), False, "row gone", legs)
    browser.check_clean()


def test_not_live_shows_while_the_server_is_down_and_goes_when_it_is_back(
    idle, server, sipp, browser
):
    ari = idle
    login_form(browser, server, "reseller")
    sipp.phone_answers("carol", ring_ms=500)
    sipp.phone_calls("bob", "2001")
    legs = follow(browser, ari, party_legs("PJSIP/bob", "PJSIP/carol"), True, "row shown")
    banner = browser.page.locator("#banner")
    assert not banner.is_visible()
    browser.outage = True
    server.stop()
    banner.wait_for(state="visible", timeout=5000)
    assert "NOT LIVE" in banner.inner_text()
    assert browser.page.locator("body.stale").count() == 1
    assert browser.page.locator("#live").inner_text().strip().upper() == "NOT LIVE"
    time.sleep(2)
    assert "last live" in banner.inner_text()
    server.start()
    banner.wait_for(state="hidden", timeout=15000)
    browser.outage = False
    assert browser.page.locator("#live.on").count() == 1
    assert legs <= browser.rows()  # the call is still there after the resume
    for leg in legs:
        ari.hangup(leg)
    follow(browser, ari, party_legs("PJSIP/bob", "PJSIP/carol"), False, "row gone", legs)
    browser.check_clean()


def test_token_in_the_fragment_logs_in_and_leaves_the_address_bar(idle, server, browser):
    answer = requests.post(
        base(server) + "/api/json/user/login/",
        data={"auth_username": "beta", "auth_password": USERS["beta"], "token": "1"},
        timeout=5,
    ).json()
    token = answer["data"]["auth_token"]
    browser.page.goto(base(server) + f"/wallboard/#auth_token={token}")
    browser.page.locator("#live.on").wait_for(timeout=5000)
    assert "auth_token" not in browser.page.url
    assert browser.page.locator("#login").is_hidden()
    assert "beta" in browser.page.locator("#who").inner_text()
    assert browser.page.locator("#rows button.hangup").count() == 0
    # A reload stays logged in (sessionStorage) until the token expires.
    browser.page.reload()
    browser.page.locator("#live.on").wait_for(timeout=5000)
    browser.check_clean()


def test_a_wrong_password_or_a_bad_token_gets_a_clear_message(idle, server, browser):
    browser.page.goto(base(server) + "/wallboard/")
    browser.page.fill("input[name=auth_username]", "acme")
    browser.page.fill("input[name=auth_password]", "not-the-password")
    browser.page.press("input[name=auth_password]", "Enter")
    error = browser.page.locator("#login-error")
    error.filter(has_text="Wrong username or password").wait_for(timeout=5000)
    assert browser.page.locator("#board").is_hidden()
    # A bad token in the fragment: back to the form, with the reason.
    browser.page.goto(base(server) + "/wallboard/#auth_token=not.a.token")
    error.filter(has_text="log in again").wait_for(timeout=5000)
    browser.check_clean()
