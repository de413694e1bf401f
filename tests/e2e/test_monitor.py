"""calls/monitor (SPEC §11.6) against the sandbox Asterisk, through a `pbxcontrol record` process
from an `api` with no ARI settings (test_control's `split`, SQLite and PostgreSQL): alice talks
to bob (alice's sipp sends a 440 Hz tone, bob's silence); the system owner listens from carol's
phone (which sends a 1000 Hz tone): carol's sipp receives the INVITE and answers, Asterisk sends
RTP to it, the supervisor's leg is listed as a call of its own (dtype `monitor`) that Acme does
not see, alice's leg shows `monitor` to the system owner within 1 s and not to Acme, no channel
of ChanSpy's appears. The same request with `whisper`, then `barge`, changes the mode (204);
who hears whom is measured from the RTP each phone receives (rtp_ear.py). The supervisor hangs
up: the session row ends, the field clears. Every request is audited. Then a kill -9 of the
recording process during a listen session: the standby keeps it, one of it, until it ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text

from sandbox.sippctl import ARI_URL
from tests.e2e.conftest import APP, show_log_if_failed
from tests.e2e.rtp_ear import QUIET, Ear, hear_all, level, loudness, tone
from tests.e2e.support import PbxServer, check_legs, of, system_view, wait_ari
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


@dataclass
class Pair:
    api: PbxServer
    record: PbxServer  # the holder first
    standby: PbxServer
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request, dialplan, databases, tmp_path) -> Iterator[Pair]:  # noqa: F811
    """test_control's `split` with a second `pbxcontrol record` standing by for machine 1."""
    with databases.fresh(request.param, tmp_path, empty=True) as url:
        app = f"{APP}-pair-{request.param}"
        record = PbxServer(tmp_path / "record", ARI_URL, app, url, command="record")
        standby = PbxServer(tmp_path / "standby", ARI_URL, app, url, command="record")
        extra = "[plugin:active_calls]\ncontext = phones\nactions_per_minute = 0\n"
        api = PbxServer(tmp_path / "api", "", "", url, command="api", machines={}, extra=extra)
        record.provision()
        try:
            record.start(ready="recording (epoch")
            standby.start(ready="standby, holder")
            api.start()
            yield Pair(api, record, standby, url)
        finally:
            for server in (api, record, standby):
                show_log_if_failed(request, server)
            statuses = [server.stop() for server in (standby, record, api)]
        assert statuses[0] == 0 and statuses[2] == 0, standby.tail() + api.tail()


def test_a_listen_session_survives_kill_9_of_the_recording_process(pair, dialplan, sipp):  # noqa: F811
    """The holder is killed (kill -9) while a supervisor listens: the standby takes the lease,
    keeps the session (one row, `monitoring`, its epoch; the list still shows `listen`, one
    supervisor's leg in Asterisk), and ends it normally when the supervisor hangs up."""
    ari, pbx = dialplan, pair.api
    (sipp.workdir / "tone.ulaw").write_bytes(tone(ALICE_HZ))
    bob = sipp.phone_answers("bob", ring_ms=200)
    alice = sipp.phone_calls("alice", "1002", scenario="uac_talk.xml")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    alices = check_legs(pbx, ari)["PJSIP/alice"]
    allow_listening(pair)
    carol = sipp.phone_answers("carol", ring_ms=200)
    answer = control(pbx, "monitor", "admin", uniqueid=alices["uniqueid"], phone="2001")
    assert answer["responses"][0]["code"] == "200", answer
    supervisor = answer["data"]["uniqueid"]
    wait_ari(ari, "the supervisor answered", lambda ch: of(ch, "PJSIP/carol", "Up"))
    shows(pbx, alices["uniqueid"], "listen", time.monotonic())
    first_epoch = lease_epoch(pair.url)
    killed = time.monotonic()
    pair.record.kill9()
    wait_for(lambda: lease_epoch(pair.url) > first_epoch, 20)  # the standby took over
    took = time.monotonic() - killed
    wait_for(lambda: "monitoring sessions taken over: 1 kept, 0 ended" in log(pair.standby), 10)
    assert sessions(pair.url) == [(supervisor, "listen", "monitoring")]  # neither lost...
    adopted = one(pair.url, "SELECT epoch FROM call_controls WHERE kind = 'monitor'")
    assert adopted == [(lease_epoch(pair.url),)]  # the new holder's now
    assert len(of(ari.channels(), "PJSIP/carol", "Up")) == 1  # ...nor doubled
    assert modes(pbx, "admin", alices["uniqueid"]) == "listen"
    again = control(pbx, "monitor", "admin", uniqueid=alices["uniqueid"], phone="2001")
    assert [r["code"] for r in again["responses"]] == ["409"], again  # still the one session
    assert len(of(ari.channels(), "PJSIP/carol")) == 1
    time.sleep(1.0)
    stats = ari.get(f"/channels/{supervisor}/rtp_statistics")
    assert stats["txcount"] > 20, stats  # still listening
    ended = control(pbx, "hangup", "admin", callid=supervisor)  # the supervisor hangs up
    assert ended["responses"][0]["code"] == "204", ended
    wait_ari(ari, "the supervisor gone", lambda ch: not of(ch, "PJSIP/carol"), 10)
    wait_for(lambda: sessions(pair.url) == [(supervisor, "listen", "ended")], 5)
    wait_for(lambda: modes(pbx, "admin", alices["uniqueid"]) == "", 2)
    assert control(pbx, "hangup", "admin", callid=alices["callid"])["responses"][0]["code"] == "204"
    for party in (alice, bob, carol):
        assert party.proc.wait(15) == 0, party.label
    print(f"kill -9 during a listen session: the standby held the lease {took:.1f} s later")


def one(url: str, sql: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def lease_epoch(url: str) -> int:
    return int(one(url, "SELECT epoch FROM machines WHERE id = 1")[0][0])


def log(server: PbxServer) -> str:
    return server.log.read_text(errors="replace")


def test_monitor_announce_beeps_to_the_monitored_phone(split, dialplan, sipp):  # noqa: F811
    """Acme's policy has monitor_announce=1: as the session starts, alice's phone (the leg
    monitored) receives a beep — bob's phone sends silence and the supervisor listens, so
    anything loud alice receives is the announcement — and Acme's own administrator sees
    `monitor` on alice's leg. The helper channels are never listed."""
    ari, pbx = dialplan, split.api
    (sipp.workdir / "tone.ulaw").write_bytes(tone(ALICE_HZ))
    (sipp.workdir / "quiet.ulaw").write_bytes(QUIET)
    bob = sipp.phone_answers("bob", ring_ms=200, scenario="uas_quiet.xml")
    alice = sipp.phone_calls("alice", "1002", scenario="uac_talk.xml")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    alices = check_legs(pbx, ari)["PJSIP/alice"]
    doc = split.record.config.parent / "announce.json"
    doc.write_text(
        '{"customers": [{"id": 3, "name": "Acme Ltd", "parent": 2, "monitor": "listen",'
        ' "monitor_announce": 1}]}'
    )
    split.record.cli("provision", str(doc))
    carol = sipp.phone_answers("carol", ring_ms=200)
    ear = Ear(sipp.phones["alice"][0], 6000)
    quiet = loudness(ear.listen(1.0))  # before: bob's silence
    ear.payloads = []
    listening = threading.Thread(target=ear.listen, args=(2.0,))
    listening.start()
    answer = control(pbx, "monitor", "admin", uniqueid=alices["uniqueid"], phone="2001")
    assert answer["responses"][0]["code"] == "200", answer
    listening.join(5)
    beeped = loudness(b"".join(ear.payloads))
    print(f"alice's phone: loudness {quiet:.4f} before, {beeped:.4f} as the session starts")
    assert quiet < 0.001 < 0.01 < beeped
    wait_ari(ari, "the supervisor answered", lambda ch: of(ch, "PJSIP/carol", "Up"))
    wait_for(lambda: modes(pbx, "acme", alices["uniqueid"]) == "listen", 2)  # announced
    assert not [r for r in system_view(pbx) if r.startswith("pbxc-") and "tone" in r]
    assert control(pbx, "hangup", "admin", callid=alices["callid"])["responses"][0]["code"] == "204"
    for party in (alice, bob, carol):
        assert party.proc.wait(15) == 0, party.label
