"""The rate limit (SPEC §11.1 `429`): one budget per person for every control function, set by
`[plugin:active_calls] actions_per_minute`; its old name `hangups_per_minute` still works,
`check-config` and the log say it is deprecated, and both names at once is an error. On the
services of test_redirect (a holder with a fake ARI), both engines."""

from __future__ import annotations

import io
import logging

import pytest
import webtest

from pbxcontrol.ops.checkconfig import check_config
from tests.conftest import build_provisioned, write_config
from tests.plugins.active_calls.hangup_support import hold
from tests.plugins.active_calls.test_redirect import RedirectAri, Service

#: Every control function, with parameters that reach it (its answer may be any but 429).
FUNCTIONS = {
    "calls/hangup": {"uniqueid": "100.1"},
    "calls/redirect": {"uniqueid": "100.1", "cnumber": "1002"},
    "calls/make": {"stype": "phone", "snumber": "1001", "cnumber": "1002"},
    "recording/recordings/start": {"uniqueid": "100.1"},
    "recording/recordings/stop": {"uniqueid": "100.1"},
    "recording/recordings/pause": {"uniqueid": "100.1"},
    "calls/monitor": {"uniqueid": "100.1", "phone": "1001"},
}


def ask(svc: Service, function: str, who: str = "admin") -> str:
    pairs = {"auth_username": who, "auth_password": f"{who}-pass", **FUNCTIONS[function]}
    return str(svc.app.get(f"/api/json/{function}/", pairs).json["responses"][0]["code"])


@pytest.mark.parametrize("spent_on", sorted(FUNCTIONS))
def test_every_control_function_spends_and_obeys_the_one_budget(tmp_path, db_url, spent_on):
    svc = Service(tmp_path, db_url, per_minute=1)
    try:
        assert ask(svc, spent_on) != "429"  # the person's one request of the minute
        assert {f: ask(svc, f) for f in sorted(FUNCTIONS)} == dict.fromkeys(
            sorted(FUNCTIONS), "429"
        )
        assert ask(svc, "calls/hangup", "acme") != "429"  # a budget per person
    finally:
        svc.close()


def configured(tmp_path, db_url, body: str):
    """The runtime of a config whose [plugin:active_calls] section is `body`, and its holder."""
    path = write_config(tmp_path, "[plugin:active_calls]\ncontext = phones\n" + body, db=db_url)
    rt = build_provisioned(path)
    return rt, hold(rt, 1, "", RedirectAri())


def test_the_old_name_still_sets_the_budget_and_the_log_says_it_is_deprecated(
    tmp_path, db_url, caplog
):
    svc = Service.__new__(Service)  # test_redirect's service, on this config
    with caplog.at_level(logging.WARNING, logger="pbxcontrol.plugins.active_calls"):
        svc.rt, svc.holder = configured(tmp_path, db_url, "hangups_per_minute = 1\n")
    svc.app = webtest.TestApp(svc.rt.app, extra_environ={"REMOTE_ADDR": "192.0.2.7"})
    try:
        assert ask(svc, "calls/make") != "429"
        assert ask(svc, "calls/redirect") == "429"
    finally:
        svc.close()
    warned = [r.getMessage() for r in caplog.records]
    assert any(
        "hangups_per_minute is deprecated: rename it actions_per_minute" in m for m in warned
    ), warned


def test_both_names_at_once_do_not_start(tmp_path, db_url):
    body = "actions_per_minute = 5\nhangups_per_minute = 7\n"
    said = "hangups_per_minute: set together with actions_per_minute: keep actions_per_minute"
    with pytest.raises(Exception, match=said):
        configured(tmp_path, db_url, body)


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        ("actions_per_minute = 5\n", 0, None),
        (
            "hangups_per_minute = 5\n",
            0,
            "[plugin:active_calls] hangups_per_minute: deprecated: renamed actions_per_minute",
        ),
        (
            "actions_per_minute = 5\nhangups_per_minute = 5\n",
            2,
            "[plugin:active_calls] hangups_per_minute: set together with actions_per_minute",
        ),
    ],
)
def test_check_config_names_the_new_key(tmp_path, body, status, said):
    path = write_config(tmp_path, "[plugin:active_calls]\n" + body)
    out = io.StringIO()
    assert check_config(str(path), out) == status, out.getvalue()
    lines = out.getvalue().splitlines()
    if said is None:
        assert lines == [f"{path}: OK"]
    else:
        assert any(said in line for line in lines), lines
        assert (lines[-1] == f"{path}: OK") == (status == 0)
