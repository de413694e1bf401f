"""Call control through the recording process (SPEC §11.2) against the sandbox Asterisk: a
`pbxcontrol api` with no `[asterisk:N]` section (no ARI credentials, no route to Asterisk)
hangs up a real SIP call through the `pbxcontrol record` process holding the machine's lease,
on SQLite (the holder polls) and on PostgreSQL (the API's NOTIFY wakes it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text

from sandbox.sippctl import ARI_URL
from tests.e2e.conftest import APP, show_log_if_failed
from tests.e2e.support import PbxServer, check_legs, of, system_view, wait_ari
from tests.e2e.test_hangup import call_alice_to_bob, ended_through_the_api, hang_up

pytestmark = pytest.mark.e2e


@dataclass
class Split:
    api: PbxServer  # lists, answers, writes intents; no ARI settings
    record: PbxServer  # holds the lease, carries the intents out
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def split(request, asterisk, databases, tmp_path) -> Iterator[Split]:
    with databases.fresh(request.param, tmp_path, empty=True) as url:
        app = f"{APP}-split-{request.param}"
        record = PbxServer(tmp_path / "record", ARI_URL, app, url, command="record")
        api = PbxServer(tmp_path / "api", "", "", url, command="api", machines={})
        assert "[asterisk" not in api.config.read_text()
        record.provision()
        try:
            record.start(ready="recording (epoch")
            api.start()
            yield Split(api, record, url)
        finally:
            for server in (api, record):
                show_log_if_failed(request, server)
            statuses = [server.stop() for server in (record, api)]
        assert statuses == [0, 0], record.tail() + api.tail()


def test_an_api_without_ari_settings_hangs_up_through_the_recording_process(split, asterisk, sipp):
    ari, pbx = asterisk, split.api
    rows, alice, bob = call_alice_to_bob(ari, pbx, sipp)
    ids = {r["uniqueid"] for r in rows.values()}
    started = time.monotonic()
    resp = hang_up(pbx, "acme", callid=rows["PJSIP/alice"]["callid"])
    took = time.monotonic() - started
    ended_through_the_api(pbx, ari, resp, ids, [alice, bob])
    assert not of(ari.channels(), "PJSIP/alice") and not ids & set(system_view(pbx))
    engine = create_engine(split.url)
    try:
        with engine.connect() as conn:
            audit = conn.execute(text("SELECT id, code, legs FROM call_actions")).one()
            intent = conn.execute(
                text("SELECT action_id, machine, state, code, epoch FROM call_intents")
            ).one()
    finally:
        engine.dispose()
    assert audit.code == 204
    assert sorted(leg[2] for leg in json.loads(audit.legs)) == ["hung up"] * len(ids)
    assert (intent.action_id, intent.machine, intent.state, intent.code) == (
        audit.id,
        1,
        "done",
        204,
    )
    assert intent.epoch >= 1
    print(f"hangup through the recording process: API answered in {took * 1000:.0f} ms")


def test_a_call_nobody_may_see_is_404_and_nothing_is_asked_of_the_holder(split, asterisk, sipp):
    ari, pbx = asterisk, split.api
    rows, _alice, _bob = call_alice_to_bob(ari, pbx, sipp)
    resp = hang_up(pbx, "beta", callid=rows["PJSIP/alice"]["callid"])
    assert resp.json()["responses"][0]["code"] == "404"
    time.sleep(0.5)
    wait_ari(ari, "the call still up", lambda ch: len(of(ch, "PJSIP/alice", "Up")) == 1, 2)
    assert check_legs(pbx, ari)
