"""recording/recordings/start, pause, stop (SPEC §11.5) on real SIP calls through the sandbox
Asterisk, on SQLite and on PostgreSQL: a `pbxcontrol api` with no ARI settings, two `pbxcontrol
record` processes on one database (a holder and a standby). The file appears in Asterisk's
recording directory (in the sandbox's root) with the call's audio, `recording` (its absolute
path) and `recording_paused` reach the list and the stream within 1 s of each answer; 403 under
a policy without `record`, 409 while recording / with none; every request is audited. A kill -9
of the holder during a recording: the standby takes over, the recording goes on, stops once,
one row, one file. A MixMonitor the dialplan started is shown and is not ours to stop.

The calls talk (alice's sipp sends a tone): on a silent call a snoop we hang up stays in
Asterisk's channel list until a frame passes its target, or the target ends (seen on the
sandbox Asterisk 22)."""

from __future__ import annotations

import os
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sandbox.sippctl import ARI_URL
from tests.e2e.conftest import APP, show_log_if_failed
from tests.e2e.rtp_ear import tone
from tests.e2e.support import USERS, PbxServer, check_legs, of, wait_ari
from tests.e2e.test_control import dialplan  # noqa: F401 (fixture)
from tests.e2e.test_stream import Watcher
from tests.plugins.active_calls.stream_support import query

pytestmark = pytest.mark.e2e
WITHIN = 1.0  # SPEC §11.8: each change in every stream within 1 s
CACHE = Path(os.environ.get("PBXCONTROL_CACHE", Path.home() / ".cache" / "pbxcontrol"))
#: Asterisk's recording directory as this host sees it (scripts/asterisk-sandbox's root).
SPOOL = CACHE / "asterisk-root" / "var" / "spool" / "asterisk" / "recording"


@dataclass
class Site:
    api: PbxServer
    holder: PbxServer
    standby: PbxServer
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, dialplan, databases, tmp_path) -> Iterator[Site]:  # noqa: F811
    assert SPOOL.is_dir(), f"no recording directory {SPOOL}: run scripts/asterisk-sandbox up"
    with databases.fresh(request.param, tmp_path, empty=True) as url:
        app = f"{APP}-rec-{request.param}"
        holder = PbxServer(tmp_path / "record-a", ARI_URL, app, url, command="record")
        standby = PbxServer(tmp_path / "record-b", ARI_URL, app, url, command="record")
        extra = "[plugin:active_calls]\nhangups_per_minute = 0\n"
        api = PbxServer(tmp_path / "api", "", "", url, command="api", machines={}, extra=extra)
        assert "[asterisk" not in api.config.read_text()  # no ARI settings, no route to it
        holder.provision()
        servers = (api, holder, standby)
        try:
            holder.start(ready="recording (epoch")
            standby.start(ready="standby, holder")
            api.start()
            yield Site(api, holder, standby, url)
        finally:
            for server in servers:
                show_log_if_failed(request, server)
                server.stop()


def allow_recording(site: Site) -> None:
    """Acme's policy lets its calls be recorded (SPEC §11.7), through the operator's provision."""
    doc = site.holder.config.parent / "policy.json"
    doc.write_text('{"customers": [{"id": 3, "name": "Acme Ltd", "parent": 2, "record": 1}]}')
    site.holder.cli("provision", str(doc))


def record(pbx: PbxServer, verb: str, user: str = "acme", **params: str) -> str:
    answer = pbx.http.get(
        f"http://127.0.0.1:{pbx.port}/api/json/recording/recordings/{verb}/",
        params={"auth_username": user, "auth_password": USERS[user], **params},
        timeout=10,
    ).json()
    assert "data" not in answer
    return str(answer["responses"][0]["code"])


def listed(pbx: PbxServer, uniqueid: str) -> dict:
    rows = pbx.list("acme") or []
    return next((r for r in rows if r["uniqueid"] == uniqueid), {})


def recording_of(pbx: PbxServer, uniqueid: str) -> str:
    """The leg's `recording` once the list shows one (within 1 s of the 204)."""
    deadline = time.monotonic() + WITHIN
    while not (path := listed(pbx, uniqueid).get("recording", "")):
        assert time.monotonic() < deadline, (
            f"no recording listed within 1 s: {listed(pbx, uniqueid)}"
        )
        time.sleep(0.02)
    return str(path)


def shows(pbx: PbxServer, watcher: Watcher, uniqueid: str, **want: object) -> float:
    """Seconds until the list and the stream both show `want` on the leg (at most WITHIN)."""
    started = time.monotonic()
    while True:
        row = listed(pbx, uniqueid)
        streamed = next((r for r in watcher.view.values() if r["uniqueid"] == uniqueid), {})
        if all(row.get(k) == v and streamed.get(k) == v for k, v in want.items()):
            return time.monotonic() - started
        took = time.monotonic() - started
        assert took <= WITHIN, f"{want} not shown within 1 s: list {row} stream {streamed}"
        time.sleep(0.02)


def timed(pbx: PbxServer, watcher: Watcher, verb: str, leg: dict, **want: object) -> str:
    """`verb` answered 204, and the list and the stream show `want` within 1 s of the answer;
    a line with both times (the figures of the report)."""
    asked = time.monotonic()
    assert record(pbx, verb, **leg) == "204"
    answered = time.monotonic() - asked
    shown = shows(pbx, watcher, leg["uniqueid"], **want)
    return f"{verb}: answered in {answered * 1000:.0f} ms, shown {shown * 1000:.0f} ms later"


def audit(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query_ = text("SELECT action, code FROM call_actions ORDER BY id")
            return [tuple(r) for r in conn.execute(query_)]
    finally:
        engine.dispose()


def sessions(url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT uniqueid, state, path FROM call_controls"))
            return [tuple(r) for r in found]
    finally:
        engine.dispose()


def wait_log(server: PbxServer, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {needle!r}:\n{server.tail(60)}"
        time.sleep(0.05)


def grows(path: Path, seconds: float = 5.0) -> int:
    """The file's size once it grew (Asterisk writes in 32 KB steps, about 2 s of audio)."""
    first, deadline = path.stat().st_size if path.exists() else -1, time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if path.exists() and path.stat().st_size > first:
            return path.stat().st_size
    raise AssertionError(f"{path} did not grow in {seconds} s (size {first})")


def talking_call(ari, pbx: PbxServer, sipp) -> dict[str, dict]:
    """alice calls bob and talks (her sipp sends a 440 Hz tone); both legs Up and listed."""
    (sipp.workdir / "tone.ulaw").write_bytes(tone(440.0))
    sipp.phone_answers("bob", ring_ms=200)
    sipp.phone_calls("alice", "1002", scenario="uac_talk.xml")
    wait_ari(
        ari,
        "alice talking to bob",
        lambda ch: len(of(ch, "PJSIP/alice", "Up")) == 1 and len(of(ch, "PJSIP/bob", "Up")) == 1,
    )
    return check_legs(pbx, ari)


def loudest(path: Path) -> int:
    """The largest sample of a finished 16-bit WAV file (Asterisk's `wav`: 8 kHz signed linear)."""
    with wave.open(str(path)) as w:
        assert (w.getsampwidth(), w.getnchannels()) == (2, 1), path
        frames = w.readframes(w.getnframes())
    samples = memoryview(frames).cast("h")
    return max((abs(x) for x in samples), default=0)


def test_start_pause_unpause_stop_on_a_real_call(site, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, site.api
    rows = talking_call(ari, pbx, sipp)
    uid = rows["PJSIP/bob"]["uniqueid"]
    bob = {"uniqueid": uid, "channel": "2"}  # bob's own leg (channel 1 would be alice's)
    watcher = Watcher(pbx.port, query("acme"))
    figures = []
    try:
        assert record(pbx, "start", **bob) == "403"  # Acme's policy: record=0 (SPEC §11.7)
        assert record(pbx, "stop", **bob) == "403"
        allow_recording(site)
        assert record(pbx, "stop", **bob) == "409"  # none to stop
        assert record(pbx, "pause", **bob) == "409"  # none to pause
        asked = time.monotonic()
        alices = {"uniqueid": rows["PJSIP/alice"]["uniqueid"], "channel": "2"}
        assert record(pbx, "start", **alices) == "204"  # bob's leg, named from alice's
        answered, asked = time.monotonic() - asked, time.monotonic()
        path = recording_of(pbx, uid)
        assert path.startswith("/var/spool/asterisk/recording/3/") and path.endswith(".wav"), path
        shows(pbx, watcher, uid, recording=path, recording_paused=0)
        shown = time.monotonic() - asked
        assert shown <= WITHIN, f"start shown in the list and the stream {shown:.2f} s after 204"
        figures.append(
            f"start: answered in {answered * 1000:.0f} ms, shown {shown * 1000:.0f} ms later"
        )
        assert listed(pbx, rows["PJSIP/alice"]["uniqueid"])["recording"] == ""  # only bob's
        on_disk = SPOOL / path.removeprefix("/var/spool/asterisk/recording/")
        grows(on_disk)
        assert record(pbx, "start", **bob) == "409"  # already recording
        figures.append(timed(pbx, watcher, "pause", bob, recording=path, recording_paused=1))
        assert record(pbx, "pause", **bob) == "204"  # paused already: stays so
        figures.append(timed(pbx, watcher, "start", bob, recording=path, recording_paused=0))
        figures.append(timed(pbx, watcher, "stop", bob, recording="", recording_paused=0))
        assert record(pbx, "stop", **bob) == "409"
        assert record(pbx, "pause", **bob) == "409"
        assert record(pbx, "start", "beta", **bob) == "404"  # not Beta's call
        wait_ari(ari, "no snoop left", no_snoop, 3)
        size = on_disk.stat().st_size
        assert size > 44, f"{on_disk}: {size} bytes"
        assert loudest(on_disk) > 1000, "the recording holds no audio"  # alice's tone
        time.sleep(2.5)
        assert on_disk.stat().st_size == size  # stopped: it grows no more
    finally:
        watcher.cut()
    print("\n" + "\n".join(figures))
    assert audit(site.url) == [
        ("record_start", 403),
        ("record_stop", 403),
        ("record_stop", 409),
        ("record_pause", 409),
        ("record_start", 204),
        ("record_start", 409),
        ("record_pause", 204),
        ("record_pause", 204),
        ("record_start", 204),
        ("record_stop", 204),
        ("record_stop", 409),
        ("record_pause", 409),
        ("record_start", 404),
    ]
    assert [(u, s) for u, s, _ in sessions(site.url)] == [(uid, "ended")]


def test_kill_9_of_the_holder_during_a_recording(site, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, site.api
    rows = talking_call(ari, pbx, sipp)
    uid = rows["PJSIP/alice"]["uniqueid"]
    allow_recording(site)
    assert record(pbx, "start", uniqueid=uid) == "204"
    path = recording_of(pbx, uid)
    on_disk = SPOOL / path.removeprefix("/var/spool/asterisk/recording/")
    grows(on_disk)
    killed = time.monotonic()
    site.holder.kill9()
    wait_log(site.standby, "recording sessions taken over: 1 kept, 0 ended", 20)
    print(
        f"\nthe standby reconciled the recording {time.monotonic() - killed:.1f} s after the kill"
    )
    grows(on_disk)  # the recording went on through the takeover
    assert record(pbx, "start", uniqueid=uid) == "409"  # not doubled
    assert listed(pbx, uid)["recording"] == path
    assert record(pbx, "pause", uniqueid=uid) == "204"
    assert listed(pbx, uid)["recording_paused"] in (0, 1)  # within 1 s: below
    deadline = time.monotonic() + WITHIN
    while listed(pbx, uid)["recording_paused"] != 1:
        assert time.monotonic() < deadline, "the new holder's pause not shown within 1 s"
        time.sleep(0.02)
    assert record(pbx, "stop", uniqueid=uid) == "204"
    deadline = time.monotonic() + WITHIN
    while listed(pbx, uid)["recording"] != "":
        assert time.monotonic() < deadline, "the new holder's stop not shown within 1 s"
        time.sleep(0.02)
    size = on_disk.stat().st_size
    time.sleep(2.5)
    assert on_disk.stat().st_size == size  # stopped: it grows no more
    assert [p.name for p in on_disk.parent.iterdir() if uid in p.name] == [on_disk.name]
    assert loudest(on_disk) > 1000, "the recording holds no audio"
    wait_ari(ari, "no snoop left", no_snoop, 3)
    assert [(u, s) for u, s, _ in sessions(site.url)] == [(uid, "ended")]
    assert audit(site.url) == [
        ("record_start", 204),
        ("record_start", 409),
        ("record_pause", 204),
        ("record_stop", 204),
    ]


def test_a_mixmonitor_of_the_dialplan_is_shown_and_not_ours_to_stop(site, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, site.api
    sipp.phone_answers("alice", ring_ms=200)
    sipp.phone_calls("bob", "700")  # the sandbox's 700: Answer, MixMonitor, Dial alice
    wait_ari(
        ari,
        "bob's recorded call to alice",
        lambda ch: len(of(ch, "PJSIP/alice", "Up")) == 1 and len(of(ch, "PJSIP/bob", "Up")) == 1,
    )
    uid = check_legs(pbx, ari)["PJSIP/bob"]["uniqueid"]
    mixmonitor = f"/var/spool/asterisk/monitor/{uid}.wav"  # MIXMONITOR_FILENAME (SPEC §4)
    assert listed(pbx, uid)["recording"] == mixmonitor
    allow_recording(site)
    for verb in ("stop", "pause", "start"):
        assert record(pbx, verb, uniqueid=uid) == "409", verb
    assert listed(pbx, uid)["recording"] == mixmonitor
    assert no_snoop(ari.channels())
    assert audit(site.url) == [("record_stop", 409), ("record_pause", 409), ("record_start", 409)]
    assert sessions(site.url) == []


def no_snoop(channels: list[dict]) -> bool:
    return not any(c["name"].startswith("Snoop/") for c in channels)
