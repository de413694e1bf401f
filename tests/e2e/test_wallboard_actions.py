"""The wallboard's per-call actions (SPEC §11, issue 24 item 6) in a real headless Chromium,
against `pbxcontrol serve`, the sandbox Asterisk (with etc/asterisk/extensions_pbxcontrol.conf)
and real SIP calls: each button shows only to a person whose privileges (learnt from
calls/active/scopes) allow it, opens a confirmation, and on confirm POSTs the request with the
person's password in the body (the board's own token only reads; nothing secret in a URL);
its effect shows in Asterisk and on the board, and a refusal shows the API's message."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from tests.browser import Page
from tests.e2e.rtp_ear import tone
from tests.e2e.support import USERS, of, wait_ari
from tests.e2e.test_control import dialplan  # noqa: F401 (fixture)
from tests.e2e.test_wallboard import Site, base, follow, party_legs

pytestmark = pytest.mark.e2e

API = "/api/json/"
SECRETS = {"auth_password", "auth_token", "password", "token"}
# `viewer` may list the calls, not act on them (role `user`, provisioned below).
PASSWORDS = USERS | {"viewer": "viewer-pass"}


def policy(site_pbx, *, record: int, monitor: str) -> None:
    """Acme's policy (SPEC §11.7) and a person without `actions`, by the operator's provision."""
    doc = site_pbx.config.parent / "policy.json"
    acme = {"id": 3, "name": "Acme Ltd", "parent": 2, "record": record, "monitor": monitor}
    viewer = {"username": "viewer", "password": PASSWORDS["viewer"], "customer": 3}
    people = [viewer | {"role": "user", "enabled": True}]
    doc.write_text(json.dumps({"customers": [acme], "people": people}))
    site_pbx.cli("provision", str(doc))


@pytest.fixture
def board(new_pbx, dialplan) -> Site:  # noqa: F811
    pbx = new_pbx(name="actions")
    # The sandbox's dialling context for redirects (SPEC §11.7); no rate limit in a test.
    with pbx.config.open("a") as config:
        config.write("[plugin:active_calls]\ncontext = phones\nactions_per_minute = 0\n")
    policy(pbx, record=1, monitor="whisper")
    return Site(pbx)


def login(browser: Page, site: Site, user: str) -> None:
    page = browser.page
    page.goto(base(site) + "/wallboard/")
    page.fill("input[name=auth_username]", user)
    page.fill("input[name=auth_password]", PASSWORDS[user])
    page.press("input[name=auth_password]", "Enter")
    page.locator("#live.on").wait_for(timeout=5000)


def buttons(page, callid: str) -> list[str]:
    """The buttons on the rows of the call `callid` (other calls on the sandbox are not ours)."""
    row = page.locator(f'#rows tr[data-callid="{callid}"]')
    return row.locator("button").evaluate_all("bs => bs.map(b => b.className)")


def ask(browser: Page, leg: str, kind: str, **fields: str) -> None:
    """Press the `kind` button of the call `leg` heads; fill the confirmation, not confirm."""
    page = browser.page
    page.locator(f'#rows tr[data-uniqueid="{leg}"] button.{kind}').click()
    page.locator("#confirm").wait_for(state="visible")
    for name in ("side", "mode"):
        if name in fields:
            page.select_option(f"#confirm-{name}", fields[name])
    for name in ("number", "phone"):
        if name in fields:
            page.fill(f"#confirm-{name}", fields[name])


def confirm(browser: Page, user: str, path: str, code: str, **fields: str) -> dict[str, str]:
    """Confirm with `user`'s password: one POST to `path` goes out, answered `code`; its form."""
    before = len(browser.posted)
    browser.page.fill("#confirm-password", PASSWORDS[user])
    with browser.page.expect_response(lambda r: urllib.parse.urlsplit(r.url).path == path) as got:
        browser.page.click("#confirm-hangup")
    answer = got.value.json()
    assert answer["responses"][0]["code"] == code, answer
    browser.page.locator("#confirm").wait_for(state="hidden")
    sent = [b for u, b in browser.posted[before:] if urllib.parse.urlsplit(u).path == path]
    assert len(sent) == 1, browser.posted[before:]
    form = dict(urllib.parse.parse_qsl(sent[0]))
    assert form["auth_username"] == user and form["auth_password"] == PASSWORDS[user]
    assert "auth_token" not in form  # the board's read token cannot act
    for key, value in fields.items():
        assert form[key] == value, (key, form)
    for url in browser.requests:  # what a proxy's access log would keep
        assert not set(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)) & SECRETS, url
    if code not in ("200", "204"):  # a refusal shows the API's own message
        said = toast(browser, answer["responses"][0]["message"])
        form["toast"] = said
    return form


def toast(browser: Page, text: str) -> str:
    shown = browser.page.locator("#toast", has_text=text)
    shown.wait_for(timeout=4000)
    return shown.inner_text()


def dialled(browser: Page, leg: str) -> str:
    """The `cnumber` the board shows for a leg (its Dialled column)."""
    return browser.page.locator(f'#rows tr[data-uniqueid="{leg}"] td:nth-child(4)').inner_text()


def test_redirect_from_the_board_moves_the_caller_to_another_phone(idle, board, sipp, browser):
    ari, page = idle, browser.page
    sipp.phone_answers("bob", ring_ms=6000)
    carol = sipp.phone_answers("carol", ring_ms=300)
    sipp.phone_calls("alice", "1002")
    login(browser, board, "acme")
    wait_ari(ari, "bob ringing", lambda ch: of(ch, "PJSIP/bob"))
    legs = follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    alice, bob = (of(ari.channels(), f"PJSIP/{n}")[0]["id"] for n in ("alice", "bob"))
    classes = buttons(page, alice)
    assert classes.count("action redirect") == 1  # one per call, not per leg
    assert "action monitor" not in classes  # acme is an administrator: no `monitor`
    # Bob's phone still rings: his side cannot be redirected (409), and the board says why.
    ask(browser, alice, "redirect", side="2", number="2001")
    assert page.locator("#confirm-title").inner_text() == "Redirect this call?"
    assert page.locator("#confirm-phone").is_hidden()
    said = confirm(browser, "acme", API + "calls/redirect/", "409", channel="2", cnumber="2001")
    assert said["toast"].startswith("Not possible now:")
    wait_ari(ari, "bob talking", lambda ch: of(ch, "PJSIP/bob", "Up"), 10)
    # Cancelled: nothing is sent, nothing moves.
    posted = len(browser.posted)
    ask(browser, alice, "redirect", number="2001")
    page.click("#confirm button[value=cancel]")
    time.sleep(0.5)
    assert len(browser.posted) == posted and of(ari.channels(), "PJSIP/bob", "Up")
    # A number the API refuses: its message is shown, nothing moves.
    ask(browser, alice, "redirect", number="not a number")
    said = confirm(browser, "acme", API + "calls/redirect/", "400", cnumber="not a number")
    assert said["toast"].startswith("Check the form: cnumber:")
    assert of(ari.channels(), "PJSIP/bob", "Up")
    # The caller (alice's side, the default) goes to carol: bob is released.
    ask(browser, alice, "redirect", number="2001")
    form = confirm(browser, "acme", API + "calls/redirect/", "204", channel="1", cnumber="2001")
    assert form["uniqueid"] == alice
    toast(browser, "Redirected to 2001")
    wait_ari(ari, "alice talking to carol", lambda ch: of(ch, "PJSIP/carol", "Up"), 10)
    assert "INVITE sip:" in carol.messages.read_text(errors="replace")
    wait_ari(ari, "bob released", lambda ch: not of(ch, "PJSIP/bob"), 5)
    deadline = time.monotonic() + 2
    while "2001" not in dialled(browser, alice):
        assert time.monotonic() < deadline, dialled(browser, alice)
        time.sleep(0.05)
    follow(browser, ari, party_legs("PJSIP/bob"), False, "bob's row gone", {bob})
    assert alice in browser.rows() and legs == {alice, bob}
    browser.check_clean()


def test_a_person_without_the_privileges_sees_no_action_buttons(idle, board, sipp, browser):
    ari = idle
    sipp.phone_answers("bob", ring_ms=300)
    sipp.phone_calls("alice", "1002")
    login(browser, board, "viewer")
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    time.sleep(0.5)
    assert browser.page.locator("#rows button").count() == 0
    browser.check_clean()


def test_monitor_from_the_board_rings_the_supervisors_phone(idle, board, sipp, browser):
    ari, page = idle, browser.page
    sipp.phone_answers("bob", ring_ms=300)
    carol = sipp.phone_answers("carol", ring_ms=300)
    dave = sipp.phone_answers("dave", ring_ms=300)
    # Alice's phone sends audio (a tone, looped): ChanSpy's loop runs on the spied audio.
    (sipp.workdir / "tone.ulaw").write_bytes(tone(440))
    sipp.phone_calls("alice", "1002", scenario="uac_talk.xml")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    alice = of(ari.channels(), "PJSIP/alice")[0]["id"]
    login(browser, board, "admin")  # the system owner holds `monitor`
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    assert buttons(page, alice).count("action monitor") == 1
    # Stronger than Acme's policy (whisper): refused with the API's message, nobody rings.
    ask(browser, alice, "monitor", mode="barge", phone="2001")
    assert page.locator("#confirm-title").inner_text() == "Monitor this call?"
    assert page.locator("#confirm-number").is_hidden()
    said = confirm(browser, "admin", API + "calls/monitor/", "403", mode="barge", phone="2001")
    assert said["toast"].startswith("The customer's policy does not allow this:")
    time.sleep(0.5)
    assert not of(ari.channels(), "PJSIP/carol")
    # Listen from carol's phone: it rings, answers, and the supervisor's leg shows.
    ask(browser, alice, "monitor", mode="listen", phone="2001")
    form = confirm(browser, "admin", API + "calls/monitor/", "200", mode="listen", phone="2001")
    assert (form["uniqueid"], form["channel"]) == (alice, "1")
    toast(browser, "Calling your phone 2001")
    wait_ari(ari, "the supervisor answered", lambda ch: of(ch, "PJSIP/carol", "Up"), 10)
    assert "INVITE sip:" in carol.messages.read_text(errors="replace")
    supervisor = of(ari.channels(), "PJSIP/carol")[0]["id"]
    follow(browser, ari, party_legs("PJSIP/carol"), True, "supervisor's row", expect=1)
    # The monitored leg carries the session's mode (SPEC §11.8): the row says so.
    page.locator(f'#rows tr[data-uniqueid="{alice}"] .badge.mon', has_text="LISTEN").wait_for(
        timeout=3000
    )
    # The same again while it lives: 409, said so.
    ask(browser, alice, "monitor", mode="listen")
    assert page.locator("#confirm-phone").input_value() == "2001"  # remembered
    said = confirm(browser, "admin", API + "calls/monitor/", "409", mode="listen", phone="2001")
    assert said["toast"].startswith("Not possible now:")
    # Another mode while it lives changes the session's mode (204): the row follows.
    ask(browser, alice, "monitor", mode="whisper")
    confirm(browser, "admin", API + "calls/monitor/", "204", mode="whisper", phone="2001")
    toast(browser, "Now whisper on this call.")
    page.locator(f'#rows tr[data-uniqueid="{alice}"] .badge.mon', has_text="WHISPER").wait_for(
        timeout=3000
    )
    # Whisper to the called side (coaching bob) from dave's phone, once carol hung up.
    ari.hangup(supervisor)
    wait_ari(ari, "carol's session ended", lambda ch: not of(ch, "PJSIP/carol"), 5)
    follow(browser, ari, party_legs("PJSIP/carol"), False, "supervisor's row gone", {supervisor})
    ask(browser, alice, "monitor", side="2", mode="whisper", phone="2002")
    whisper = {"mode": "whisper", "phone": "2002", "channel": "2"}
    confirm(browser, "admin", API + "calls/monitor/", "200", **whisper)
    toast(browser, "Calling your phone 2002: answer it to whisper")
    wait_ari(ari, "dave answered", lambda ch: of(ch, "PJSIP/dave", "Up"), 10)
    assert "INVITE sip:" in dave.messages.read_text(errors="replace")
    follow(browser, ari, party_legs("PJSIP/dave"), True, "supervisor's row", expect=1)
    browser.check_clean()


def test_record_from_the_board_starts_a_recording_in_asterisk(idle, board, sipp, browser):
    """Record's request goes out and is carried out: Asterisk gets the snoop our recording
    runs on. (That the row then shows `recording`, with Pause/Resume and Stop following it, is
    checked against the server in tests/plugins/active_calls/test_wallboard.py.)"""
    ari, page = idle, browser.page
    sipp.phone_answers("bob", ring_ms=300)
    sipp.phone_calls("alice", "1002")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    alice = of(ari.channels(), "PJSIP/alice")[0]["id"]
    login(browser, board, "acme")
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    assert buttons(page, alice).count("action record") == 1
    ask(browser, alice, "record")
    assert page.locator("#confirm-title").inner_text() == "Record this call?"
    posted = len(browser.posted)
    page.click("#confirm button[value=cancel]")
    time.sleep(0.5)
    assert len(browser.posted) == posted  # cancelled: nothing sent
    assert not [c for c in ari.channels() if c["name"].startswith("Snoop/")]
    ask(browser, alice, "record")
    form = confirm(browser, "acme", API + "recording/recordings/start/", "204")
    assert (form["uniqueid"], form["machine"]) == (alice, "1")
    toast(browser, "Recording started.")
    wait_ari(ari, "the recording's snoop on alice", lambda ch: of(ch, f"Snoop/{alice}"), 3)
    browser.check_clean()


def test_record_pause_resume_and_stop_from_the_board(idle, board, sipp, browser):
    """Each recording button follows the call's `recording` on the real Asterisk: Record, then
    the row's REC badge with Pause rec and Stop rec; REC paused with Resume rec; Stop: gone."""
    ari, page = idle, browser.page
    sipp.phone_answers("bob", ring_ms=300)
    sipp.phone_calls("alice", "1002")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    alice = of(ari.channels(), "PJSIP/alice")[0]["id"]
    login(browser, board, "acme")
    follow(browser, ari, party_legs("PJSIP/alice", "PJSIP/bob"), True, "row shown")
    assert buttons(page, alice).count("action record") == 1
    ask(browser, alice, "record")
    assert page.locator("#confirm-title").inner_text() == "Record this call?"
    posted = len(browser.posted)
    page.click("#confirm button[value=cancel]")
    time.sleep(0.5)
    assert len(browser.posted) == posted  # cancelled: nothing sent
    badge = page.locator(f'#rows tr[data-uniqueid="{alice}"] .badge.rec')
    steps = [
        ("record", "recordings/start", "Recording started", "REC"),
        ("pause", "recordings/pause", "Recording paused", "REC paused"),
        ("resume", "recordings/start", "Recording resumed", "REC"),
    ]
    for kind, path, said, shown in steps:
        ask(browser, alice, kind)
        assert confirm(browser, "acme", API + f"recording/{path}/", "204")["uniqueid"] == alice
        toast(browser, said)
        page.locator(f'#rows tr[data-uniqueid="{alice}"] .badge.rec', has_text=shown).wait_for(
            timeout=2000
        )
    assert badge.inner_text() == "REC"
    ask(browser, alice, "stop")
    assert page.locator("#confirm-title").inner_text() == "Stop recording this call?"
    confirm(browser, "acme", API + "recording/recordings/stop/", "204")
    toast(browser, "Recording stopped")
    badge.wait_for(state="detached", timeout=2000)
    page.locator("#rows button.action.record").wait_for(timeout=2000)
    browser.check_clean()
