"""recording/recordings/start, stop and pause (SPEC §11.5): parameters, the side of the call,
who may, 409 while recording / with none, the shared rate limit, the audit — carried out by an
intent worker (SPEC §11.2) on a fake Asterisk that answers snoops and live recordings as the
sandbox Asterisk 22 did (tests/recorder/record_ari.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import webtest
from sqlalchemy import select, update

from pbxcontrol.db.controls import CONTROLS
from pbxcontrol.db.models import Base
from pbxcontrol.plugin import tables
from pbxcontrol.recorder.leg import Recorded
from pbxcontrol.runtime import Runtime
from tests.conftest import build_provisioned, write_config
from tests.plugins.active_calls.conftest import CALLS, insert_legs
from tests.plugins.active_calls.hangup_support import ADDRESS, NOT_FOUND, Holder, hang_up, hold
from tests.recorder.record_ari import RecordAri

API = "/api/json/recording/recordings/"
CUSTOMERS = Base.metadata.tables["customers"]


class Service:
    def __init__(
        self, tmp_path: Path, db_url: str, per_minute: int = 1000, record: int = 1, **ari: object
    ):
        self.ari = RecordAri({row["uniqueid"] for row in CALLS}, **ari)  # type: ignore[arg-type]
        body = f"[plugin:active_calls]\nactions_per_minute = {per_minute}\n"
        self.rt: Runtime = build_provisioned(write_config(tmp_path, body, db=db_url))
        insert_legs(self.rt, CALLS)
        with self.rt.engine.begin() as conn:  # Acme may record (SPEC §11.7)
            conn.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == 3).values(record=record))
        self.noted: list[Recorded] = []  # what the executors tell the writer (the list)
        self.holder: Holder = hold(self.rt, 1, "", self.ari, note=self.noted.append)
        self.app = webtest.TestApp(self.rt.app, extra_environ={"REMOTE_ADDR": ADDRESS})

    def do(self, verb: str, who: str = "acme", **params: str) -> list[tuple[str, str]]:
        pairs = {"auth_username": who, "auth_password": f"{who}-pass", **params}
        body = self.app.get(f"{API}{verb}/", pairs).json
        assert "data" not in body
        self.last = body["responses"]
        return [(r["code"], r["key"]) for r in body["responses"]]

    def audit(self) -> list[dict]:
        with self.rt.engine.connect() as conn:
            table = tables.call_actions
            return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]

    def controls(self) -> list[tuple[str, str]]:
        table = CONTROLS
        with self.rt.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(table.c.uniqueid, table.c.state))]

    def close(self) -> None:
        self.holder.stop()
        self.rt.close()


@pytest.fixture
def svc(tmp_path, db_url):
    service = Service(tmp_path, db_url)
    yield service
    service.close()


def test_start_pause_unpause_stop_through_a_snoop_and_its_live_recording(svc):
    assert svc.do("start", uniqueid="100.1") == [("204", "")]
    [(name, rec)] = svc.ari.recordings.items()
    assert name.startswith(f"3/{time.strftime('%Y/%m/%d', time.gmtime())}/100.1-")
    assert svc.ari.snoops == {rec["snoop"]: "100.1"} and rec["state"] == "recording"
    path = f"/var/spool/asterisk/recording/{name}.wav"
    assert svc.noted[-1] == Recorded("100.1", path, True)
    assert svc.do("start", uniqueid="100.1") == [("409", "uniqueid")]  # already recording
    assert svc.do("pause", uniqueid="100.1") == [("204", "")]
    assert svc.ari.recordings[name]["state"] == "paused"
    assert svc.noted[-1] == Recorded("100.1", path, True, paused=1)
    assert svc.do("start", uniqueid="100.1") == [("204", "")]  # "Starts/unpauses"
    assert svc.ari.recordings[name]["state"] == "recording"
    assert svc.noted[-1] == Recorded("100.1", path, True)
    assert svc.do("stop", uniqueid="100.1") == [("204", "")]
    assert svc.ari.recordings == {} and svc.ari.snoops == {}  # the snoop hung up by us
    assert svc.noted[-1] == Recorded("100.1", path, False)
    assert svc.ari.created == 1 and svc.ari.variables == {}
    assert svc.controls() == [("100.1", "ended")]
    actions = [(r["action"], r["code"]) for r in svc.audit()]
    assert actions == [
        ("record_start", 204),
        ("record_start", 409),
        ("record_pause", 204),
        ("record_start", 204),
        ("record_stop", 204),
    ]


def test_stop_or_pause_with_no_recording_of_ours_is_409(svc):
    assert svc.do("stop", uniqueid="100.1") == [("409", "uniqueid")]
    assert svc.do("pause", uniqueid="100.1") == [("409", "uniqueid")]
    assert svc.ari.snoops == {}


def test_a_mixmonitor_of_the_dialplan_is_shown_but_not_ours_to_stop_pause_or_double(svc):
    mixmonitor = "/var/spool/asterisk/monitor/100.1.wav"  # MIXMONITOR_FILENAME (SPEC §4)
    with svc.rt.engine.begin() as conn:
        legs = tables.legs
        conn.execute(update(legs).where(legs.c.uniqueid == "100.1").values(recording=mixmonitor))
    for verb in ("stop", "pause", "start"):
        assert svc.do(verb, uniqueid="100.1") == [("409", "uniqueid")], verb
    assert "dialplan" in svc.last[0]["message"]
    assert svc.ari.snoops == {} and svc.ari.created == 0 and svc.noted == []
    assert svc.do("start", uniqueid="100.1", channel="2") == [("204", "")]  # the other leg


def test_channel_2_records_the_called_leg(svc):
    assert svc.do("start", uniqueid="100.1", channel="2") == [("204", "")]
    assert list(svc.ari.snoops.values()) == ["100.2"]


def test_a_recording_that_ended_with_its_leg_is_not_running(svc):
    assert svc.do("start", uniqueid="100.1") == [("204", "")]
    svc.ari.end("100.1")  # the leg hangs up: Asterisk ends snoop and recording
    svc.ari.live.add("100.1")  # (the list still shows it for a moment)
    assert svc.do("stop", uniqueid="100.1") == [("409", "uniqueid")]
    assert svc.controls() == [("100.1", "ended")]
    assert svc.do("start", uniqueid="100.1") == [("204", "")]  # a new one may start
    assert svc.ari.created == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [("400", "uniqueid")]),
        ({"uniqueid": "100.1", "channel": "3"}, [("400", "channel")]),
        ({"uniqueid": "100.1", "machine": "x"}, [("400", "machine")]),
        ({"uniqueid": "1" * 300}, [("400", "uniqueid")]),
    ],
)
def test_invalid_parameters_are_400_by_key_and_record_nothing(svc, params, expected):
    assert svc.do("start", **params) == expected
    assert svc.ari.asked == []
    assert svc.audit()[-1]["code"] == 400


@pytest.mark.parametrize("who", ["beta", "gamma", "panel", "wall"])
def test_role_without_actions_is_402(svc, who):
    assert svc.do("start", who, uniqueid="130.1") == [("402", "")]
    assert svc.ari.asked == []


def test_invisible_call_gets_exactly_the_nonexistent_call_answer(svc):
    assert svc.do("start", uniqueid="130.1") == [("404", "uniqueid")]
    theirs = svc.last
    assert svc.do("start", uniqueid="999.9") == [("404", "uniqueid")]
    assert svc.last == theirs and theirs[0]["message"] == NOT_FOUND
    assert svc.ari.asked == []


def test_a_leg_not_up_is_409(svc):
    assert svc.do("start", uniqueid="110.1") == [("409", "uniqueid")]
    assert svc.ari.asked == []


def test_a_leg_asterisk_no_longer_has_is_404(svc):
    svc.ari.live.discard("100.1")
    assert svc.do("start", uniqueid="100.1") == [("404", "uniqueid")]
    assert svc.controls() == [("100.1", "ended")]


def test_a_missing_recording_directory_is_503_naming_it_and_leaves_no_snoop(tmp_path, db_url):
    service = Service(tmp_path, db_url, directory=False)
    try:
        assert service.do("start", uniqueid="100.1") == [("503", "")]
        assert "recording directory" in service.last[0]["message"]
        assert service.ari.snoops == {}
        assert service.controls() == [("100.1", "ended")]
    finally:
        service.close()


def test_the_rate_limit_is_one_budget_with_hangup(tmp_path, db_url):
    service = Service(tmp_path, db_url, per_minute=2)
    try:
        assert service.do("start", uniqueid="100.1") == [("204", "")]
        codes = [r["code"] for r in hang_up(service.app, "acme", callid="999.9")["responses"]]
        assert codes == ["404"]
        assert service.do("stop", uniqueid="100.1") == [("429", "")]
        assert [r["action"] for r in service.audit()] == ["record_start", "hangup", "record_stop"]
    finally:
        service.close()


def test_a_customer_whose_policy_does_not_allow_recording_is_403(tmp_path, db_url):
    service = Service(tmp_path, db_url, record=0)
    try:
        assert service.do("start", uniqueid="100.1") == [("403", "")]
        assert service.last[0]["message"] == "Your rate plan does not allow this."
        assert service.ari.asked == [] and service.audit()[-1]["code"] == 403
    finally:
        service.close()
