"""The wallboard's per-call actions in Chromium against the sandbox Asterisk (SPEC §11,
issue 24 item 6): Record and Stop rec each after a confirmation with the person's password
(the board's token only reads), the button following the call's `recording`; Redirect asks
for a number, and cancelling any action does nothing."""

from __future__ import annotations

import time

import pytest

from tests.e2e.support import USERS, of, wait_ari
from tests.e2e.test_wallboard import Site, follow, login_form, party_legs

pytestmark = pytest.mark.e2e


@pytest.fixture
def board(new_pbx) -> Site:
    return Site(new_pbx(name="actions"))


def confirm(page, password: str, number: str | None = None) -> None:
    page.locator("#confirm-text").wait_for(state="visible")
    if number is not None:
        page.fill("#confirm-number", number)
    page.fill("#confirm-password", password)
    page.click("#confirm-hangup")


def test_record_then_stop_from_the_board_and_redirect_asks_for_a_number(idle, board, sipp, browser):
    ari, page = idle, browser.page
    login_form(browser, board, "acme")
    sipp.phone_answers("bob", ring_ms=500)
    sipp.phone_calls("alice", "1002")
    wait_ari(ari, "both legs up", lambda ch: len(of(ch, "PJSIP/bob", "Up")) == 1)
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    record = page.locator("#rows button.action.record")
    assert record.count() == 1  # one per call, not per leg
    record.click()
    assert page.locator("#confirm-title").inner_text() == "Record this call?"
    page.click("#confirm button[value=cancel]")
    time.sleep(0.5)
    assert not any(c["name"].startswith("Snoop/") for c in ari.channels())  # cancelled
    record.click()
    confirm(page, USERS["acme"])
    page.locator("#toast", has_text="Recording started").wait_for(timeout=3000)
    wait_ari(ari, "a snoop", lambda ch: any(c["name"].startswith("Snoop/") for c in ch), 3)
    stop = page.locator("#rows button.action.stop")
    stop.wait_for(timeout=2000)  # the call's recording reached the board
    assert stop.inner_text() == "Stop rec"
    stop.click()
    assert page.locator("#confirm-title").inner_text() == "Stop recording this call?"
    confirm(page, USERS["acme"])
    page.locator("#toast", has_text="Recording stopped").wait_for(timeout=3000)
    page.locator("#rows button.action.record").wait_for(timeout=2000)
    wait_ari(ari, "no snoop", lambda ch: not any(c["name"].startswith("Snoop/") for c in ch), 3)
    redirect = page.locator("#rows button.action.redirect")
    redirect.click()
    assert page.locator("#confirm-number").is_visible()
    confirm(page, USERS["acme"], number="not a number")
    page.locator("#toast", has_text="Check the number").wait_for(timeout=3000)
    assert len(of(ari.channels(), "PJSIP/alice", "Up")) == 1  # nothing moved
    browser.check_clean()
