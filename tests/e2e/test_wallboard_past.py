"""The wallboard's past moment in a real headless Chromium (SPEC §14): a real call recorded
from the sandbox Asterisk, ended; the board at a second while it rang and at one while it was
up shows it as it was, marked as the past, read-only; one click is back to live."""

from __future__ import annotations

import math
import os
import time

import pytest

from tests.browser import Page
from tests.e2e import test_wallboard as wallboard
from tests.e2e.support import of, wait_ari
from tests.e2e.test_wallboard import follow, login_form, party_legs

server = wallboard.server  # the wallboard tests' own server (the browser: tests/browser.py)

pytestmark = pytest.mark.e2e
SCREENSHOT = os.environ.get("PBXCONTROL_WALLBOARD_PAST_SCREENSHOT", "")


def show_moment(page: Page, second: int) -> None:
    """Type `second` (Unix) into the page's date-and-time field, in the browser's own time
    zone as a person would, and ask for it."""
    local = page.page.evaluate(
        """s => { const d = new Date(s * 1000), p = n => String(n).padStart(2, "0");
        return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" +
          p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()); }""",
        second,
    )
    page.page.fill("#past-at", local)
    page.page.click("#past-show")


def statuses(page: Page) -> dict[str, str]:
    return dict(
        page.page.locator("#rows tr").evaluate_all(
            "rs => rs.map(r => [r.dataset.uniqueid, r.querySelector('.status').textContent])"
        )
    )


def test_the_board_at_a_past_moment_is_marked_read_only_and_one_click_from_live(
    idle, server, sipp, browser
):
    ari = idle
    login_form(browser, server, "acme")
    sipp.phone_answers("bob", ring_ms=2500)
    sipp.phone_calls("alice", "1002")
    wait_ari(ari, "bob ringing", lambda ch: of(ch, "PJSIP/bob", "Ringing"))
    ringing = math.floor(time.time())  # a whole second while bob rang, before the answer
    wait_ari(ari, "both legs up", lambda ch: len(of(ch, "PJSIP/bob", "Up")) == 1)
    talking = math.floor(time.time()) + 1
    legs = follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    time.sleep(max(0.0, talking + 1.5 - time.time()))
    ari.hangup(min(legs))
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), False, "row gone", legs)
    page = browser.page

    show_moment(browser, ringing)
    page.locator("body.past").wait_for(timeout=5000)
    banner = page.locator("#past-banner")
    assert banner.is_visible() and "NOT LIVE" in banner.inner_text()
    assert page.locator("#live").inner_text().strip().upper() == "PAST"
    assert page.locator("#live.on").count() == 0 and page.locator("#banner").is_hidden()
    assert browser.rows() == legs
    # alice's phone placed the call (Ring), bob's was dialled (Ringing): as Asterisk had them.
    assert sorted(statuses(browser).values()) == ["Ring", "Ringing"]
    assert page.locator("#t-ringing").inner_text() == "2"
    assert page.locator("#rows button.hangup").count() == 0  # the past is read-only
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT)
    durations = page.locator("#rows .duration").all_inner_texts()
    time.sleep(1.2)
    assert page.locator("#rows .duration").all_inner_texts() == durations  # counted to then

    show_moment(browser, talking)
    page.locator("#rows .status-up").nth(1).wait_for(timeout=5000)
    assert statuses(browser) == {leg: "Up" for leg in legs}

    page.click("#back-live")  # one click
    page.locator("#live.on").wait_for(timeout=5000)
    assert page.locator("body.past").count() == 0 and banner.is_hidden()
    page.locator("#empty").wait_for(state="visible", timeout=2000)  # the call has ended since

    show_moment(browser, int(time.time()) + 3600)  # the future: refused, still live
    page.locator("#toast", has_text="at: is in the future").wait_for(timeout=5000)
    assert page.locator("#live.on").count() == 1 and page.locator("body.past").count() == 0
    browser.check_clean()
