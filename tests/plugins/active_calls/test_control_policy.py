"""Call-control privileges and policy (SPEC §11.1, §11.7): `panel` acts only on calls of the
lines the person owns; the policy fields are inherited down the customer tree; calls/redirect
runs the owning customer's dialling context. On a fake ARI (test_redirect.RedirectAri)."""

from __future__ import annotations

import pytest

from pbxcontrol import provisioning
from plugins.active_calls import policy
from tests.plugins.active_calls.hangup_support import codes, hang_up
from tests.plugins.active_calls.test_redirect import Service


@pytest.fixture
def svc(tmp_path, db_url):
    service = Service(tmp_path, db_url)
    yield service
    service.close()


def provision(svc: Service, doc: dict) -> None:
    with svc.rt.sessions.begin() as session:
        provisioning.apply(session, doc)


def test_panel_acts_on_a_call_of_a_line_it_owns(svc):
    # 100.1 is alice calling bob; bob's line is owned by `panel` (tests/conftest.py TREE).
    assert svc.redirect("panel", uniqueid="100.1", cnumber="1003") == [("204", "")]
    assert codes(hang_up(svc.app, "panel", callid="100.1")) == [("204", "")]


def test_panel_on_a_visible_call_without_its_line_is_402_and_does_nothing(svc):
    # 110.1: the Dentist calling alice, visible to Acme but involving no line `panel` owns.
    assert svc.redirect("panel", uniqueid="110.1", cnumber="1003") == [("402", "")]
    assert svc.last[0]["message"] == policy.NOT_OWN
    assert codes(hang_up(svc.app, "panel", callid="110.1")) == [("402", "")]
    assert svc.ari.originated == [] and svc.ari.hung_up == []
    assert [r["code"] for r in svc.audit()] == [402, 402]


def test_panel_on_an_invisible_call_is_the_nonexistent_answer(svc):
    assert svc.redirect("panel", uniqueid="130.1", cnumber="1003") == [("404", "uniqueid")]
    assert codes(hang_up(svc.app, "panel", callid="130.1")) == [("404", "callid")]


def test_redirect_runs_the_owning_customers_dialling_context(svc):
    provision(svc, {"customers": [{"id": 2, "name": "Reseller A", "parent": 1, "context": "ra"}]})
    assert svc.redirect(uniqueid="100.1", cnumber="1003") == [("204", "")]
    # Acme (3) sets no context: it inherits its parent's.
    assert svc.ari.originated[-1][1]["PBXC_CONTEXT"] == "ra"
    provision(svc, {"customers": [{"id": 3, "name": "Acme Ltd", "parent": 2, "context": "acme"}]})
    assert svc.redirect(uniqueid="100.1", cnumber="1003") == [("204", "")]
    assert svc.ari.originated[-1][1]["PBXC_CONTEXT"] == "acme"


def test_policy_fields_are_inherited_down_the_tree_with_root_defaults(svc):
    provision(
        svc,
        {
            "customers": [
                {"id": 2, "name": "Reseller A", "parent": 1, "monitor": "whisper", "record": 1},
                {"id": 3, "name": "Acme Ltd", "parent": 2, "record": 0, "monitor_announce": 1},
            ]
        },
    )
    with svc.rt.engine.connect() as conn:
        acme_branch = policy.policy_of(conn, 5, "phones")
        gamma = policy.policy_of(conn, 7, "phones")
        reseller = policy.policy_of(conn, 2, "phones")
    assert acme_branch == policy.Policy(5, "whisper", 1, 0, "phones")
    assert gamma == policy.Policy(7, "none", 0, 0, "phones")
    assert reseller == policy.Policy(2, "whisper", 0, 1, "phones")
    assert acme_branch.allows_mode("listen") and acme_branch.allows_mode("whisper")
    assert not acme_branch.allows_mode("barge") and not gamma.allows_mode("listen")


def test_the_owner_of_a_phone_leg_is_its_lines_customer(svc):
    with svc.rt.engine.connect() as conn:
        # 100.2 is bob's leg (Acme, 3); 130.1 a leg with no line: its scustomer.
        assert policy.owner_of(conn, 1, "100.2") == 3
        assert policy.owner_of(conn, 1, "999.9") == 0
