"""calls/monitor (SPEC §11.6): the `monitor` privilege, the owning customer's policy (§11.7),
the leg's state, the supervisor's line, and what the holder originates (the supervisor's phone
into [pbxcontrol-monitor] at the mode, ChanSpy on the chosen leg's channel) — on the fake ARI
of test_redirect (it records each originate)."""

from __future__ import annotations

import pytest

from pbxcontrol import provisioning
from tests.plugins.active_calls.test_redirect import Service

MONITOR = "/api/json/calls/monitor/"


@pytest.fixture
def svc(tmp_path, db_url):
    service = Service(tmp_path, db_url)
    yield service
    service.close()


def allow(svc: Service, mode: str) -> None:
    with svc.rt.sessions.begin() as session:
        provisioning.apply(
            session, {"customers": [{"id": 2, "name": "Reseller A", "parent": 1, "monitor": mode}]}
        )


def monitor(svc: Service, who: str = "admin", **params: str) -> dict:
    pairs = {"auth_username": who, "auth_password": f"{who}-pass", **params}
    body = svc.app.get(MONITOR, pairs).json
    svc.last = body["responses"]
    return body


def codes(body: dict) -> list[tuple[str, str]]:
    return [(r["code"], r["key"]) for r in body["responses"]]


def test_the_supervisors_phone_rings_into_chanspy_on_the_chosen_leg(svc):
    allow(svc, "whisper")  # Acme inherits it from its parent
    body = monitor(svc, uniqueid="100.1", channel="2", mode="whisper", phone="PJSIP/erin")
    assert codes(body) == [("200", "")]
    [(endpoint, variables, params)] = svc.ari.originated
    supervisor = params["channelId"]
    assert body["data"] == {"machine": 1, "uniqueid": supervisor}
    assert supervisor.startswith("pbxc-") and supervisor.endswith("-supervisor")
    assert endpoint == "PJSIP/erin"
    assert (params["context"], params["extension"]) == ("pbxcontrol-monitor", "whisper")
    # channel=2: the called side of alice's call, bob's leg 100.2.
    assert variables["PBXC_SPY"] == "PJSIP/bob-00000002"
    assert variables["PBX_DTYPE"] == "monitor" and variables["PBX_DNUMBER"] == "100.2"
    assert variables["PBX_DCUSTOMER"] == "0" and variables["PBX_SCUSTOMER"] == "7"
    assert variables["PBX_SNUMBER"] == "3001"
    row = svc.audit()[-1]
    assert (row["action"], row["code"], row["uniqueid"]) == ("monitor", 200, "100.1")


def test_a_mode_stronger_than_the_policy_is_403(svc):
    assert codes(monitor(svc, uniqueid="100.1", phone="3001")) == [("403", "mode")]
    assert svc.last[0]["message"] == "Your rate plan does not allow this."
    allow(svc, "listen")
    assert codes(monitor(svc, uniqueid="100.1", phone="3001", mode="barge")) == [("403", "mode")]
    assert svc.ari.originated == []
    assert codes(monitor(svc, uniqueid="100.1", phone="3001")) == [("200", "")]


@pytest.mark.parametrize("who", ["acme", "reseller", "panel", "beta"])
def test_without_the_monitor_privilege_is_402(svc, who):
    allow(svc, "barge")
    assert codes(monitor(svc, who, uniqueid="100.1", phone="1001")) == [("402", "")]
    assert svc.ari.originated == []
    row = svc.audit()[-1]  # audited, refused or not (SPEC §11.1)
    assert (row["action"], row["code"], row["username"]) == ("monitor", 402, who)
    assert codes(monitor(svc, who, phone="x")) == [("402", "")]  # before any validation


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"phone": "3001"}, [("400", "uniqueid")]),
        ({"uniqueid": "100.1"}, [("400", "phone")]),
        ({"uniqueid": "100.1", "phone": "3001", "mode": "spy"}, [("400", "mode")]),
        ({"uniqueid": "100.1", "phone": "3001", "channel": "0"}, [("400", "channel")]),
        ({"uniqueid": "100.1", "phone": "9999"}, [("400", "phone")]),
        ({"uniqueid": "999.9", "phone": "3001"}, [("404", "uniqueid")]),
        ({"uniqueid": "920.1", "phone": "3001", "channel": "2"}, [("409", "channel")]),
    ],
)
def test_refusals_by_key_originate_nothing(svc, params, expected):
    allow(svc, "barge")
    assert codes(monitor(svc, **params)) == expected
    assert svc.ari.originated == []
    assert svc.audit()[-1]["code"] == int(expected[0][0])
