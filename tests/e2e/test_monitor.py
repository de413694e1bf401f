"""calls/monitor (SPEC §11.6) against the sandbox Asterisk, through a `pbxcontrol record` process
from an `api` with no ARI settings (test_control's `split`, SQLite and PostgreSQL): alice talks
to bob (alice's sipp sends a tone); the system owner listens from carol's phone: carol's sipp
receives the INVITE and answers, Asterisk sends RTP to it (the supervisor channel's
`rtp_statistics`), the supervisor's leg is listed as a call of its own (dtype `monitor`) that
Acme does not see, no channel of ChanSpy's appears, and the session ends with the call."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.rtp_ear import QUIET, Ear, hear_all, level, tone
from tests.e2e.support import check_legs, of, system_view, wait_ari
from tests.e2e.test_control import control, dialplan, split  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def allow_listening(servers, mode: str = "listen") -> None:
    """Acme's policy lets others monitor up to `mode` (SPEC §11.7), through the operator's
    provision."""
    doc = servers.record.config.parent / "policy.json"
    doc.write_text(
        f'{{"customers": [{{"id": 3, "name": "Acme Ltd", "parent": 2, "monitor": "{mode}"}}]}}'
    )
    servers.record.cli("provision", str(doc))


ALICE_HZ, SUPERVISOR_HZ = 440, 1000  # what alice's phone and the supervisor's send


def who_hears_whom(sipp, seconds: float = 1.5) -> dict[str, dict[str, float]]:
    """How loud alice's and the supervisor's tones are in what Asterisk sends to each phone,
    over the same `seconds` (rtp_ear.py: read off the loopback interface)."""
    ears = {
        "alice": Ear(sipp.phones["alice"][0], 6000),  # sipp's media ports: uac 6000, uas 6100
        "bob": Ear(sipp.phones["bob"][0], 6100),
        "carol": Ear(sipp.phones["carol"][0], 6100),
    }
    heard = hear_all(ears, seconds)
    return {
        name: {"alice": level(audio, ALICE_HZ), "supervisor": level(audio, SUPERVISOR_HZ)}
        for name, audio in heard.items()
    }


def modes(pbx, who: str, uniqueid: str) -> str:
    scope = {"customer": "system"} if who == "admin" else {}
    rows = {r["uniqueid"]: r for r in pbx.list(who, **scope) or []}
    return rows[uniqueid]["monitor"]


def shows(pbx, uniqueid: str, mode: str, since: float) -> float:
    """Seconds from `since` until the system owner's list shows `mode` on the leg (≤ 1 s)."""
    deadline = since + 1.0
    while modes(pbx, "admin", uniqueid) != mode:
        assert time.monotonic() < deadline, f"the list does not show {mode!r} within 1 s"
        time.sleep(0.02)
    return time.monotonic() - since


def spying(ari, supervisor: str) -> tuple[str, str]:
    """What the supervisor's leg runs in Asterisk: (extension, ChanSpy's options)."""
    plan = ari.get(f"/channels/{supervisor}")["dialplan"]
    return plan["exten"], plan.get("app_data", "").rpartition(",")[2]


def audit(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT action, code FROM call_actions ORDER BY id"))
            return [(r.action, r.code) for r in rows]
    finally:
        engine.dispose()


def sessions(url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT supervisor, mode, state FROM call_controls WHERE kind = 'monitor'")
            )
            return [(r.supervisor, r.mode, r.state) for r in rows]
    finally:
        engine.dispose()


def test_a_supervisor_listens_then_whispers_then_barges(split, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, split.api
    (sipp.workdir / "tone.ulaw").write_bytes(tone(ALICE_HZ))  # alice speaks,
    (sipp.workdir / "talk.ulaw").write_bytes(tone(SUPERVISOR_HZ))  # so does the supervisor,
    (sipp.workdir / "quiet.ulaw").write_bytes(QUIET)  # bob's phone sends silence
    bob = sipp.phone_answers("bob", ring_ms=200, scenario="uas_quiet.xml")
    alice = sipp.phone_calls("alice", "1002", scenario="uac_talk.xml")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    rows = check_legs(pbx, ari)
    alices, bobs = rows["PJSIP/alice"], rows["PJSIP/bob"]
    asked = {"uniqueid": alices["uniqueid"], "phone": "2001"}
    refused = control(pbx, "monitor", "admin", **asked)
    assert [r["code"] for r in refused["responses"]] == ["403"], refused  # Acme's policy: none
    assert [r["code"] for r in control(pbx, "monitor", "acme", **asked)["responses"]] == ["402"]
    allow_listening(split, "barge")
    carol = sipp.phone_answers("carol", ring_ms=200, scenario="uas_talk.xml")
    started = time.monotonic()
    answer = control(pbx, "monitor", "admin", **asked)
    took = time.monotonic() - started
    assert answer["responses"][0]["code"] == "200", answer
    supervisor = answer["data"]["uniqueid"]
    assert answer["data"] == {"machine": 1, "uniqueid": supervisor}
    wait_ari(ari, "the supervisor answered", lambda ch: of(ch, "PJSIP/carol", "Up"))
    assert "INVITE sip:" in carol.messages.read_text(errors="replace")
    print(f"listen shown after {shows(pbx, alices['uniqueid'], 'listen', started):.3f} s")
    assert modes(pbx, "acme", alices["uniqueid"]) == ""  # Acme's administrator: not told
    time.sleep(1.0)
    stats = ari.get(f"/channels/{supervisor}/rtp_statistics")
    print(f"supervisor's rtp_statistics: {stats}")
    assert stats["txcount"] > 20, stats  # Asterisk sends the spied audio to carol's phone
    listening = who_hears_whom(sipp)
    assert spying(ari, supervisor) == ("listen", "qES")
    listed = system_view(pbx)
    row = listed[supervisor]
    assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("monitor", alices["uniqueid"], 0)
    assert (row["scustomer"], row["stype"], row["snumber"]) == (4, "phone", "2001")
    assert row["monitor"] == "" and listed[bobs["uniqueid"]]["monitor"] == ""
    assert set(listed) == {c["id"] for c in ari.channels()}  # ChanSpy adds no channel
    assert supervisor not in {r["uniqueid"] for r in pbx.list("acme") or []}
    again = control(pbx, "monitor", "admin", **asked)
    assert [r["code"] for r in again["responses"]] == ["409"], again
    heard_in = {"listen": listening}
    for mode, options in (("whisper", "qESw"), ("barge", "qESB")):
        asked_at = time.monotonic()
        changed = control(pbx, "monitor", "admin", **asked, mode=mode)
        assert [r["code"] for r in changed["responses"]] == ["204"], changed
        print(f"{mode} shown after {shows(pbx, alices['uniqueid'], mode, asked_at):.3f} s")
        assert spying(ari, supervisor) == (mode, options)
        assert {c["id"] for c in ari.channels()} == set(system_view(pbx))  # helpers gone
        heard_in[mode] = who_hears_whom(sipp)
    print(f"tone levels in what each phone receives, per mode: {heard_in}")
    loud, faint = 0.02, 0.005  # a tone alone is ~0.23 (rtp_ear.level); absent, ~0.0002
    for mode, heard in heard_in.items():
        assert heard["carol"]["alice"] > loud, mode  # the supervisor hears alice
        assert heard["bob"]["alice"] > loud, mode  # and bob still does
    # alice (the chosen leg's own phone) hears the supervisor in whisper and barge; bob only
    # in barge; nobody in listen.
    expected = {"listen": (False, False), "whisper": (True, False), "barge": (True, True)}
    for mode, (alice_hears, bob_hears) in expected.items():
        for name, hears in (("alice", alice_hears), ("bob", bob_hears)):
            got = heard_in[mode][name]["supervisor"]
            assert got > loud if hears else got < faint, (mode, name, got)
    assert [s[1:] for s in sessions(split.url)] == [("barge", "monitoring")]
    ended = control(pbx, "hangup", "admin", callid=supervisor)  # the supervisor hangs up
    assert ended["responses"][0]["code"] == "204", ended
    wait_ari(ari, "the supervisor gone", lambda ch: not of(ch, "PJSIP/carol"), 10)
    shows(pbx, alices["uniqueid"], "", time.monotonic())
    wait_for(lambda: sessions(split.url) == [(supervisor, "barge", "ended")], 5)
    assert control(pbx, "hangup", "admin", callid=alices["callid"])["responses"][0]["code"] == "204"
    for party in (alice, bob, carol):
        assert party.proc.wait(15) == 0, party.label
    assert audit(split.url) == [
        ("monitor", 403),
        ("monitor", 402),
        ("monitor", 200),
        ("monitor", 409),
        ("monitor", 204),
        ("monitor", 204),
        ("hangup", 204),
        ("hangup", 204),
    ]
    print(f"calls/monitor through the recording process: API answered in {took * 1000:.0f} ms")


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)
