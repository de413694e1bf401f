"""calls/redirect (SPEC §11.3): parameters, the side of the call, who may, the shared rate limit,
the audit — carried out by an intent worker (SPEC §11.2) on a fake ARI that records the
originate of the helper channel and answers ChannelRedirect's status as Asterisk would."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import webtest
from sqlalchemy import select

from pbxcontrol.plugin import tables
from pbxcontrol.runtime import Runtime
from tests.conftest import build_provisioned, write_config
from tests.plugins.active_calls.conftest import CALLS, insert_legs, leg
from tests.plugins.active_calls.hangup_support import ADDRESS, NOT_FOUND, Holder, hang_up, hold

REDIRECT = "/api/json/calls/redirect/"
# A call with one leg only (nothing on the called side), and one on a Local channel.
EXTRA = [
    leg("910.1", "910.1", 910, scustomer=3, dcustomer=3, channel="PJSIP/alice-00000009"),
    leg("920.1", "920.1", 920, scustomer=3, dcustomer=3, status="Ringing"),
    leg("920.2", "920.1", 921, scustomer=3, dcustomer=3, status="Ringing"),
]


class RedirectAri:
    """Asterisk as the holder sees it: the helper's originate, its status variable, hangups."""

    def __init__(self, status: str = "SUCCESS"):
        self.status = status
        self.originated: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.hung_up: list[str] = []
        self.lock = threading.Lock()

    def originate(self, endpoint: str, variables: dict[str, str], **params: str) -> None:
        with self.lock:
            self.originated.append((endpoint, variables, params))

    def variable(self, channel_id: str, name: str) -> str | None:
        assert name == "PBXC_STATUS"
        return self.status

    def hang_up(self, channel_id: str) -> bool:
        self.hung_up.append(channel_id)
        return True


class Service:
    def __init__(self, tmp_path: Path, db_url: str, per_minute: int = 1000):
        self.ari = RedirectAri()
        body = f"[plugin:active_calls]\nactions_per_minute = {per_minute}\ncontext = phones\n"
        self.rt: Runtime = build_provisioned(write_config(tmp_path, body, db=db_url))
        insert_legs(self.rt, CALLS + EXTRA)
        self.holder: Holder = hold(self.rt, 1, "", self.ari)
        self.app = webtest.TestApp(self.rt.app, extra_environ={"REMOTE_ADDR": ADDRESS})

    def redirect(self, who: str = "acme", **params: str) -> list[tuple[str, str]]:
        pairs = {"auth_username": who, "auth_password": f"{who}-pass", **params}
        body = self.app.get(REDIRECT, pairs).json
        assert "data" not in body
        self.last = body["responses"]
        return [(r["code"], r["key"]) for r in body["responses"]]

    def audit(self) -> list[dict]:
        with self.rt.engine.connect() as conn:
            table = tables.call_actions
            return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]

    def close(self) -> None:
        self.holder.stop()
        self.rt.close()


@pytest.fixture
def svc(tmp_path, db_url):
    service = Service(tmp_path, db_url)
    yield service
    service.close()


def test_calling_side_is_redirected_through_the_helper_channel(svc):
    assert svc.redirect(uniqueid="110.2", cnumber="1002", ctype="forward") == [("204", "")]
    [(endpoint, variables, params)] = svc.ari.originated
    assert endpoint == "Local/redirect@pbxcontrol-actions"
    # channel=1 (default): the calling side of alice's call is the trunk's leg 110.1.
    assert variables == {
        "PBXC_TARGET": "110.1",
        "PBXC_CONTEXT": "phones",
        "PBXC_CTYPE": "forward",
        "PBXC_CNUMBER": "1002",
    }
    helper = params["channelId"]
    assert helper.startswith("pbxc-") and helper.endswith("-a")
    assert params["otherChannelId"] == helper[:-1] + "b"
    assert svc.ari.hung_up == [helper]  # the helper is ours to end
    row = svc.audit()[-1]
    assert (row["action"], row["uniqueid"], row["code"]) == ("redirect", "110.2", 204)
    assert json.loads(row["legs"]) == [[1, "110.1", "redirected"]]


def test_called_side_is_the_other_real_leg(svc):
    assert svc.redirect(uniqueid="100.1", cnumber="1001", channel="2") == [("204", "")]
    assert svc.ari.originated[0][1]["PBXC_TARGET"] == "100.2"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"cnumber": "1002"}, [("400", "uniqueid")]),
        ({"uniqueid": "100.1"}, [("400", "cnumber")]),
        ({"uniqueid": "100.1", "cnumber": "10 02"}, [("400", "cnumber")]),
        ({"uniqueid": "100.1", "cnumber": "1002", "channel": "3"}, [("400", "channel")]),
        ({"uniqueid": "100.1", "cnumber": "1002", "ctype": "X;"}, [("400", "ctype")]),
        ({"uniqueid": "100.1", "cnumber": "1002", "machine": "x"}, [("400", "machine")]),
    ],
)
def test_invalid_parameters_are_400_by_key_and_redirect_nothing(svc, params, expected):
    assert svc.redirect(**params) == expected
    assert svc.ari.originated == []
    assert svc.audit()[-1]["code"] == 400


def test_an_invalid_number_says_so_as_enswitch_does(svc):
    svc.redirect(uniqueid="100.1", cnumber="abc")
    assert svc.last[0]["message"] == "Invalid called number specified."


@pytest.mark.parametrize("who", ["beta", "gamma", "wall"])
def test_role_without_actions_is_402(svc, who):
    assert svc.redirect(who, uniqueid="130.1", cnumber="1002") == [("402", "")]
    assert svc.ari.originated == []


def test_invisible_call_gets_exactly_the_nonexistent_call_answer(svc):
    assert svc.redirect("acme", uniqueid="130.1", cnumber="1002") == [("404", "uniqueid")]
    theirs = svc.last
    assert svc.redirect("acme", uniqueid="999.9", cnumber="1002") == [("404", "uniqueid")]
    assert svc.last == theirs and theirs[0]["message"] == NOT_FOUND
    assert svc.ari.originated == []


def test_no_leg_on_the_called_side_or_a_called_leg_not_up_is_409(svc):
    assert svc.redirect(uniqueid="910.1", cnumber="1002", channel="2") == [("409", "channel")]
    assert svc.redirect(uniqueid="920.1", cnumber="1002", channel="2") == [("409", "channel")]
    assert svc.ari.originated == []


def test_a_leg_asterisk_no_longer_has_is_404(svc):
    svc.ari.status = "NOCHANNEL"
    assert svc.redirect(uniqueid="100.1", cnumber="1002") == [("404", "uniqueid")]


def test_asterisk_not_confirming_is_503(svc, monkeypatch):
    from pbxcontrol.recorder import actions

    monkeypatch.setattr(actions, "REDIRECT_WAIT", 0.1)
    svc.ari.status = ""
    assert svc.redirect(uniqueid="100.1", cnumber="1002") == [("503", "")]


def test_the_rate_limit_is_one_budget_with_hangup(tmp_path, db_url):
    service = Service(tmp_path, db_url, per_minute=2)
    try:
        assert service.redirect(uniqueid="100.1", cnumber="1002") == [("204", "")]
        codes = [r["code"] for r in hang_up(service.app, "acme", callid="999.9")["responses"]]
        assert codes == ["404"]
        assert service.redirect(uniqueid="100.1", cnumber="1002") == [("429", "")]
        assert [r["action"] for r in service.audit()] == ["redirect", "hangup", "redirect"]
    finally:
        service.close()
