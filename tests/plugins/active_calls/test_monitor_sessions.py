"""calls/monitor sessions (SPEC §11.2 item 5, §11.6): each is a `call_controls` row of kind
`monitor` (target leg, supervisor's leg, mode, state) written before the supervisor's phone is
rung; the same request with another mode while the session lives moves the supervisor's leg
to that mode (ChannelRedirect through the helper Local, 204); a holder ends the rows whose
supervisor's leg is gone and adopts those that live; `monitor_announce=1` whispers a beep to the
monitored leg. On a fake ARI that records originates and answers GET /channels/{id}."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import webtest
from sqlalchemy import select, update

from pbxcontrol import provisioning
from pbxcontrol.db.models import Base
from pbxcontrol.plugin import tables
from pbxcontrol.recorder import monitor as holder_monitor
from tests.conftest import build_provisioned, write_config
from tests.plugins.active_calls.conftest import CALLS, insert_legs, leg
from tests.plugins.active_calls.hangup_support import ADDRESS, hold
from tests.plugins.active_calls.test_redirect import EXTRA, RedirectAri

MONITOR = "/api/json/calls/monitor/"
CONTROLS = Base.metadata.tables["call_controls"]


class MonitorAri(RedirectAri):
    """RedirectAri and the channels that exist (GET /channels/{id})."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: dict[str, dict[str, Any]] = {}

    def originate(self, endpoint: str, variables: dict[str, str], **params: str) -> None:
        super().originate(endpoint, variables, **params)
        if params.get("channelId", "").endswith("-supervisor"):
            self.channels[params["channelId"]] = {"state": "Ringing"}

    def call(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        assert method == "GET" and path.startswith("/channels/"), (method, path)
        found = self.channels.get(path.rsplit("/", 1)[1])
        return (200, found) if found is not None else (404, None)


class Service:
    def __init__(self, tmp_path, db_url):
        self.ari = MonitorAri()
        body = "[plugin:active_calls]\nactions_per_minute = 1000\ncontext = phones\n"
        self.rt = build_provisioned(write_config(tmp_path, body, db=db_url))
        insert_legs(self.rt, CALLS + EXTRA)
        self.policy(monitor="barge")
        self.holder = hold(self.rt, 1, "", self.ari)
        self.app = webtest.TestApp(self.rt.app, extra_environ={"REMOTE_ADDR": ADDRESS})

    def policy(self, **fields: Any) -> None:
        acme = {"id": 3, "name": "Acme Ltd", "parent": 2, "max_calls": 2, **fields}
        with self.rt.sessions.begin() as session:
            provisioning.apply(session, {"customers": [acme]})

    def monitor(self, **params: str) -> dict:
        pairs = {"auth_username": "admin", "auth_password": "admin-pass", "phone": "3001"}
        return self.app.get(MONITOR, {**pairs, "uniqueid": "100.1", **params}).json

    def rows(self) -> list[dict]:
        with self.rt.engine.connect() as conn:
            found = conn.execute(select(CONTROLS).order_by(CONTROLS.c.id)).mappings()
            return [dict(r) for r in found]

    def audit(self) -> list[dict]:
        with self.rt.engine.connect() as conn:
            table = tables.call_actions
            return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]

    def answered(self, supervisor: str, mode: str) -> None:
        """The supervisor's phone answered: ChanSpy runs (the recorder wrote its leg)."""
        self.ari.channels[supervisor] = {"state": "Up"}
        row = leg(supervisor, supervisor, 200, scustomer=7, stype="phone", snumber="3001")
        row.update(dtype="monitor", dnumber="100.1", spying=f"{mode}/100.1")
        insert_legs(self.rt, [row])

    def close(self) -> None:
        self.holder.stop()
        self.rt.close()


@pytest.fixture
def svc(tmp_path, db_url):
    service = Service(tmp_path, db_url)
    yield service
    service.close()


def codes(body: dict) -> list[tuple[str, str]]:
    return [(r["code"], r["key"]) for r in body["responses"]]


def test_a_session_is_a_row_written_with_the_supervisors_leg_and_mode(svc):
    body = svc.monitor(mode="listen")
    assert codes(body) == [("200", "")]
    supervisor = body["data"]["uniqueid"]
    [row] = svc.rows()
    assert (row["kind"], row["machine"], row["uniqueid"]) == ("monitor", 1, "100.1")
    assert (row["supervisor"], row["mode"], row["state"]) == (supervisor, "listen", "monitoring")
    assert row["epoch"] >= 1 and row["intent_id"] >= 1


def test_another_mode_moves_the_live_session_and_is_204(svc):
    supervisor = svc.monitor(mode="listen")["data"]["uniqueid"]
    svc.answered(supervisor, "listen")
    assert codes(svc.monitor(mode="listen")) == [("409", "uniqueid")]  # already, this mode
    body = svc.monitor(mode="barge")
    assert codes(body) == [("204", "")], body
    assert "data" not in body
    endpoint, variables, params = svc.ari.originated[-1]
    assert endpoint == "Local/monitor-mode@pbxcontrol-actions"
    assert variables == {"PBXC_TARGET": supervisor, "PBXC_MODE": "barge"}
    assert svc.ari.hung_up == [params["channelId"]]  # the helper is ours to end
    [row] = svc.rows()  # the same session, not a second one
    assert (row["supervisor"], row["mode"], row["state"]) == (supervisor, "barge", "monitoring")
    audit = svc.audit()
    assert [(a["code"], a["action"]) for a in audit] == [
        (200, "monitor"),
        (409, "monitor"),
        (204, "monitor"),
    ]
    assert json.loads(audit[-1]["legs"]) == [[1, "100.1", "barge"]]


def test_a_mode_change_while_the_phone_rings_is_409(svc):
    supervisor = svc.monitor(mode="listen")["data"]["uniqueid"]
    svc.answered(supervisor, "")  # listed, ChanSpy not started: no mode yet
    svc.ari.channels[supervisor] = {"state": "Ringing"}
    assert codes(svc.monitor(mode="whisper")) == [("409", "mode")]
    assert svc.rows()[0]["mode"] == "listen"


def test_a_mode_stronger_than_the_policy_is_403_for_a_change_too(svc):
    supervisor = svc.monitor(mode="listen")["data"]["uniqueid"]
    svc.answered(supervisor, "listen")
    svc.policy(monitor="whisper")
    assert codes(svc.monitor(mode="barge")) == [("403", "mode")]
    assert svc.rows()[0]["mode"] == "listen"


def test_the_holder_ends_the_rows_whose_supervisor_hung_up_and_adopts_the_others(svc):
    first = svc.monitor(mode="listen")["data"]["uniqueid"]
    svc.answered(first, "listen")
    body = svc.monitor(mode="whisper", channel="2")  # bob's leg, 100.2
    assert codes(body) == [("200", "")], body
    second = body["data"]["uniqueid"]
    del svc.ari.channels[first]  # the first supervisor hung up
    deadline = time.monotonic() + holder_monitor.SWEEP + 3
    while svc.rows()[0]["state"] != "ended" and time.monotonic() < deadline:
        time.sleep(0.05)
    states = {r["supervisor"]: r["state"] for r in svc.rows()}
    assert states == {first: "ended", second: "monitoring"}
    # A new holder (another epoch) adopts what lives.
    with svc.rt.engine.begin() as conn:
        conn.execute(update(CONTROLS).values(epoch=0))
    rows = holder_monitor.Rows(svc.rt.sessions, 1, 99)
    assert holder_monitor.reconcile(svc.ari, rows) == (1, 0)
    assert [(r["supervisor"], r["epoch"]) for r in svc.rows() if r["state"] != "ended"] == [
        (second, 99)
    ]


def test_a_row_left_starting_by_a_killed_holder_is_ended_when_nothing_rang(svc):
    with svc.rt.sessions.begin() as session:
        from pbxcontrol.db import controls

        controls.open_session(
            session, 1, "100.1", "", "", "", 5, 1, kind="monitor",
            supervisor="pbxc-5-supervisor", mode="listen",
        )  # fmt: skip
    rows = holder_monitor.Rows(svc.rt.sessions, 1, 2)
    assert holder_monitor.reconcile(svc.ari, rows) == (0, 1)
    assert svc.rows()[0]["state"] == "ended"


def test_monitor_announce_whispers_a_beep_to_the_monitored_leg(svc):
    svc.policy(monitor="barge", monitor_announce=1)
    assert codes(svc.monitor(mode="listen")) == [("200", "")]
    endpoint, variables, params = svc.ari.originated[-1]
    assert endpoint == "Local/tone@pbxcontrol-actions"
    assert variables == {"PBXC_SPY": "PJSIP/alice-00000001"}
    assert (params["context"], params["extension"]) == ("pbxcontrol-actions", "whisper-tone")
    assert params["channelId"].endswith("-tone") and params["otherChannelId"].endswith("-toneb")


def test_without_announce_no_beep(svc):
    assert codes(svc.monitor(mode="listen")) == [("200", "")]
    assert [o[0] for o in svc.ari.originated] == ["PJSIP/erin"]
