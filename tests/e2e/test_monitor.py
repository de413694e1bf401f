"""calls/monitor (SPEC §11.6) against the sandbox Asterisk, through a `pbxcontrol record` process
from an `api` with no ARI settings (test_control's `split`, SQLite and PostgreSQL): alice talks
to bob (alice's sipp sends a tone); the system owner listens from carol's phone: carol's sipp
receives the INVITE and answers, Asterisk sends RTP to it (the supervisor channel's
`rtp_statistics`), the supervisor's leg is listed as a call of its own (dtype `monitor`) that
Acme does not see, no channel of ChanSpy's appears, and the session ends with the call."""

from __future__ import annotations

import math
import time

import pytest

from tests.e2e.support import check_legs, of, system_view, wait_ari
from tests.e2e.test_control import control, dialplan, split  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def tone(seconds: float = 1.0) -> bytes:
    """A 440 Hz tone as 8 kHz mu-law (G.711 PCMU), raw."""
    out = bytearray()
    for n in range(int(8000 * seconds)):
        sample = int(8000 * math.sin(2 * math.pi * 440 * n / 8000))
        sign = 0x80 if sample < 0 else 0
        magnitude = min(abs(sample), 32635) + 132
        exponent = max(0, magnitude.bit_length() - 8)
        mantissa = (magnitude >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return bytes(out)


def allow_listening(servers) -> None:
    """Acme's policy lets others listen (SPEC §11.7), through the operator's provision."""
    doc = servers.record.config.parent / "policy.json"
    doc.write_text(
        '{"customers": [{"id": 3, "name": "Acme Ltd", "parent": 2, "monitor": "listen"}]}'
    )
    servers.record.cli("provision", str(doc))


def test_a_supervisor_listens_from_their_phone(split, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, split.api
    (sipp.workdir / "tone.ulaw").write_bytes(tone())
    bob = sipp.phone_answers("bob", ring_ms=200)
    alice = sipp.phone_calls("alice", "1002", scenario="uac_talk.xml")
    wait_ari(ari, "alice talking to bob", lambda ch: of(ch, "PJSIP/bob", "Up"))
    rows = check_legs(pbx, ari)
    alices = rows["PJSIP/alice"]
    asked = {"uniqueid": alices["uniqueid"], "phone": "2001"}
    refused = control(pbx, "monitor", "admin", **asked)
    assert [r["code"] for r in refused["responses"]] == ["403"], refused  # Acme's policy: none
    assert [r["code"] for r in control(pbx, "monitor", "acme", **asked)["responses"]] == ["402"]
    allow_listening(split)
    carol = sipp.phone_answers("carol", ring_ms=200)
    started = time.monotonic()
    answer = control(pbx, "monitor", "admin", **asked)
    took = time.monotonic() - started
    assert answer["responses"][0]["code"] == "200", answer
    supervisor = answer["data"]["uniqueid"]
    assert answer["data"] == {"machine": 1, "uniqueid": supervisor}
    wait_ari(ari, "the supervisor answered", lambda ch: of(ch, "PJSIP/carol", "Up"))
    assert "INVITE sip:" in carol.messages.read_text(errors="replace")
    time.sleep(2.0)
    stats = ari.get(f"/channels/{supervisor}/rtp_statistics")
    print(f"supervisor's rtp_statistics: {stats}")
    assert stats["txcount"] > 20, stats  # Asterisk sends the spied audio to carol's phone
    listed = system_view(pbx)
    row = listed[supervisor]
    assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("monitor", alices["uniqueid"], 0)
    assert (row["scustomer"], row["stype"], row["snumber"]) == (4, "phone", "2001")
    assert set(listed) == {c["id"] for c in ari.channels()}  # ChanSpy adds no channel
    assert supervisor not in {r["uniqueid"] for r in pbx.list("acme") or []}
    again = control(pbx, "monitor", "admin", **asked)
    assert [r["code"] for r in again["responses"]] == ["409"], again
    ended = control(pbx, "hangup", "admin", callid=alices["callid"])
    assert ended["responses"][0]["code"] == "204", ended
    wait_ari(ari, "the session ended with the call", lambda ch: not of(ch, "PJSIP/carol"), 10)
    for party in (alice, bob, carol):
        assert party.proc.wait(15) == 0, party.label
    print(f"calls/monitor through the recording process: API answered in {took * 1000:.0f} ms")
