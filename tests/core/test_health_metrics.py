"""GET /health and GET /metrics (SPEC §10), on both engines: no credentials, no tenant data,
for the clients of `[http] ops_allow` only (SPEC §13)."""

import dataclasses
import time

import pytest
import webtest
from sqlalchemy import create_engine, insert, update

from pbxcontrol.db.models import Base
from pbxcontrol.http import health
from tests.conftest import LIST

MACHINES = Base.metadata.tables["machines"]
TAKEOVER = 5.0


@pytest.fixture
def served(rt):
    """The API app of a runtime configured with machines 1 and 2."""
    from pbxcontrol.http import metrics
    from pbxcontrol.http.api import build_app

    rt.metrics = metrics.Metrics(rt.engine, [1, 2], TAKEOVER)
    rt.api = dataclasses.replace(rt.api, observe=rt.metrics.observe)
    rt.app = build_app(rt.api)
    metrics.mount(rt.app, rt.metrics, rt.engine, [1, 2], TAKEOVER, rt.config.ops_allow)
    return rt, webtest.TestApp(rt.app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})


def beat(rt, machine, *, age=0.5, connected=True, holder="pbx-a:4242", last_event_age=2.0, **more):
    """A machine's row as its holder writes it with each heartbeat (lease renewal)."""
    now = time.time()
    values = dict(
        holder=holder,
        connected=connected,
        heartbeat_at=now - age,
        last_event_at=now - last_event_age,
        events_total=1234,
        events_per_second=12.5,
        **{k: v for k, v in more.items() if k in MACHINES.c},
    )
    if "renewed_at" in MACHINES.c:
        values["renewed_at"] = now - age
    with rt.engine.begin() as conn:
        done = conn.execute(update(MACHINES).where(MACHINES.c.id == machine).values(values))
        if not done.rowcount:
            conn.execute(insert(MACHINES).values(id=machine, name=f"machine {machine}", **values))


def test_healthy_when_every_configured_machine_is_recorded(served):
    rt, app = served
    beat(rt, 1)
    beat(rt, 2, holder="pbx-b:99")
    resp = app.get("/health")
    assert resp.status_int == 200 and resp.content_type == "application/json"
    assert resp.json["status"] == "ok" and resp.json["database"] == "ok"
    assert resp.json["machines"]["1"] == {
        "recording": True,
        "holder": "pbx-a:4242",
        "connected": True,
        "last_event_age": pytest.approx(2.0, abs=1.0),
        "live_legs": 0,
        "renewed_age": pytest.approx(0.5, abs=1.0),
        "recorded": True,
        "unrecorded_since": None,
    }
    assert resp.json["machines"]["2"]["holder"] == "pbx-b:99"
    assert resp.json["problems"] == []


def test_a_quiet_asterisk_is_healthy(served):
    """No call for an hour: no event, but the websocket is up and the lease renewed."""
    rt, app = served
    beat(rt, 1, last_event_age=3600)
    beat(rt, 2, last_event_age=3600)
    assert app.get("/health").status_int == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"age": 2 * TAKEOVER + 1},  # the holder stopped renewing (dead, hung, cut off)
        {"connected": False},  # the holder does not hear from Asterisk
        {"holder": ""},  # released: nobody records it
    ],
    ids=["stale", "disconnected", "released"],
)
def test_unhealthy_when_a_machine_is_not_recorded(served, fault):
    rt, app = served
    beat(rt, 1)
    beat(rt, 2, **fault)
    resp = app.get("/health", status=503)
    assert resp.json["status"] == "fail" and resp.json["database"] == "ok"
    assert resp.json["machines"]["1"]["recording"] is True
    assert resp.json["machines"]["2"]["recording"] is False
    (problem,) = resp.json["problems"]  # one line, naming the machine
    assert problem.startswith("machine 2")


def test_a_machine_whose_lease_went_silent_is_named_not_recorded_since_its_last_renewal(served):
    """SPEC §12: 2 x takeover_seconds without a renewal (the database's clock): 503, the
    machine named, since when."""
    rt, app = served
    beat(rt, 1)
    beat(rt, 2, age=2 * TAKEOVER - 1)
    assert app.get("/health").json["machines"]["2"]["recorded"] is True
    beat(rt, 2, age=2 * TAKEOVER + 1.5)
    resp = app.get("/health", status=503)
    entry = resp.json["machines"]["2"]
    assert entry["recorded"] is False and entry["recording"] is False
    assert entry["unrecorded_since"] == pytest.approx(time.time() - 2 * TAKEOVER - 1.5, abs=1.0)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["unrecorded_since"]))
    assert resp.json["problems"] == [
        f"machine 2 is not recorded since {since}: no recorder renewed its lease for "
        f"{entry['renewed_age']:g} s"
    ]
    assert resp.json["machines"]["1"]["recorded"] is True
    text = app.get("/metrics").text
    assert 'pbxcontrol_machine_recorded{machine="1"} 1.0' in text
    assert 'pbxcontrol_machine_recorded{machine="2"} 0.0' in text


def test_unhealthy_when_a_configured_machine_was_never_recorded(served):
    rt, app = served
    beat(rt, 1)
    resp = app.get("/health", status=503)
    assert resp.json["machines"]["2"] == {
        "recording": False,
        "holder": "",
        "connected": False,
        "last_event_age": None,
        "live_legs": 0,
        "renewed_age": None,
        "recorded": False,
        "unrecorded_since": None,
    }
    assert resp.json["problems"] == ["machine 2 is not recorded: no recorder ever held it"]


def test_a_machine_not_configured_is_shown_but_does_not_fail_health(served):
    rt, app = served
    beat(rt, 1)
    beat(rt, 2)
    beat(rt, 7, connected=False)
    resp = app.get("/health")
    assert resp.status_int == 200 and resp.json["machines"]["7"]["recording"] is False


def test_unhealthy_when_the_database_does_not_answer(tmp_path):
    broken = create_engine(f"sqlite:///{tmp_path}/no/such/dir/pbx.db")
    status, body = health.check(broken, [1], TAKEOVER)
    assert (status, body) == (
        503,
        {
            "status": "fail",
            "database": "unreachable",
            "machines": {},
            "problems": ["the database does not answer"],
        },
    )


def test_metrics_show_requests_latency_and_the_fleet_without_tenant_data(served):
    rt, app = served
    beat(rt, 1, reconnects=3, reconciles=7, corrections=2, lag_seconds=0.25)
    for password in ("acme-pass", "acme-pass", "wrong"):
        app.get(f"{LIST}?auth_username=acme;auth_password={password}")
    app.get("/api/json/no/such/")
    resp = app.get("/metrics")
    assert resp.content_type == "text/plain"
    text = resp.text
    assert 'pbxcontrol_http_requests_total{code="200",function="calls/active/list"} 2.0' in text
    assert 'pbxcontrol_http_requests_total{code="401",function="calls/active/list"} 1.0' in text
    assert 'pbxcontrol_http_requests_total{code="404",function="unknown"} 1.0' in text
    assert (
        'pbxcontrol_http_request_duration_seconds_count{function="calls/active/list"} 3.0' in text
    )
    assert "pbxcontrol_stream_subscribers 0.0" in text
    assert "pbxcontrol_database_up 1.0" in text
    assert 'pbxcontrol_machine_recording{machine="1"} 1.0' in text
    assert 'pbxcontrol_machine_recording{machine="2"} 0.0' in text
    assert 'pbxcontrol_machine_live_legs{machine="1"} 0.0' in text
    assert 'pbxcontrol_machine_events_received_total{machine="1"} 1234.0' in text
    if "reconnects" in MACHINES.c:  # the heartbeat's counters (see the report of issue 14)
        assert 'pbxcontrol_machine_reconnects_total{machine="1"} 3.0' in text
        assert 'pbxcontrol_machine_reconcile_corrections_total{machine="1"} 2.0' in text
        assert 'pbxcontrol_machine_lag_seconds{machine="1"} 0.25' in text
    for secret in ("acme", "Acme", "pbx-a", "Sandbox Telecom"):
        assert secret not in text


def test_health_and_metrics_need_no_credentials_and_name_no_tenant(served):
    rt, app = served
    beat(rt, 1)
    for path in ("/health", "/metrics"):
        body = app.get(path, status="*").text
        for tenant in ("acme", "Acme Ltd", "Reseller A", "1001", "alice"):
            assert tenant not in body


class _HungEngine:
    """An engine whose database never answers (a connection stuck in the network)."""

    def __init__(self):
        import threading

        self.release = threading.Event()

    def connect(self):
        self.release.wait(30)
        raise RuntimeError("released")


def test_a_hung_database_is_a_503_timeout_not_a_hung_health_check():
    import threading

    engine = _HungEngine()
    answer = health.Deadline(0.3)
    got: list = []
    asker = threading.Thread(target=lambda: got.append(answer(engine, [1], TAKEOVER)))
    asker.start()
    asker.join(5)
    try:
        assert not asker.is_alive(), "/health waited on the hung database"
        assert got == [
            (
                503,
                {
                    "status": "fail",
                    "database": "timeout",
                    "machines": {},
                    "problems": ["the database did not answer within 0.3 s"],
                },
            )
        ]
    finally:
        engine.release.set()


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_only_the_ops_allow_clients_reach_health_and_metrics(served, path):
    """Default `ops_allow`: this host (IPv4, IPv6, IPv4-mapped); anyone else a 403 envelope."""
    rt, app = served
    beat(rt, 1)
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        resp = app.get(path, status="*", extra_environ={"REMOTE_ADDR": address})
        assert resp.status_int in (200, 503) and "responses" not in resp.text, address
    for address in ("192.0.2.1", "127.0.0.2", "::2", "2001:db8::1", "", "garbage"):
        resp = app.get(path, status=403, extra_environ={"REMOTE_ADDR": address})
        assert resp.content_type == "application/json"
        assert resp.json == {
            "responses": [
                {"code": "403", "key": "", "message": "This address may not use this endpoint."}
            ]
        }


def test_ops_allow_names_the_monitors_and_is_checked_after_trusted_proxies(rt):
    from pbxcontrol.auth.proxy import ClientAddress, parse_networks
    from pbxcontrol.http import metrics
    from pbxcontrol.http.api import build_app

    app = build_app(rt.api)
    allow = parse_networks("10.0.0.0/8, 2001:db8:5::7")
    metrics.mount(app, metrics.Metrics(rt.engine, [], TAKEOVER), rt.engine, [], TAKEOVER, allow)
    proxied = webtest.TestApp(ClientAddress(parse_networks("127.0.0.1")).middleware(app))
    for address, status in (("10.9.8.7", 200), ("2001:db8:5::7", 200), ("127.0.0.1", 403)):
        got = proxied.get("/metrics", status="*", extra_environ={"REMOTE_ADDR": address})
        assert got.status_int == status, address
    # Through the trusted proxy on loopback, what counts is the client it names.
    for client, status in (("10.1.1.1", 200), ("203.0.113.5", 403)):
        got = proxied.get(
            "/metrics",
            status="*",
            headers={"X-Forwarded-For": client},
            extra_environ={"REMOTE_ADDR": "127.0.0.1"},
        )
        assert got.status_int == status, client
    # A forged header from an untrusted client changes nothing.
    got = proxied.get(
        "/metrics",
        status="*",
        headers={"X-Forwarded-For": "10.1.1.1"},
        extra_environ={"REMOTE_ADDR": "203.0.113.5"},
    )
    assert got.status_int == 403
