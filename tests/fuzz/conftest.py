"""A provisioned service with some live legs, served by waitress on loopback for fuzzing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import insert

from pbxcontrol.plugin import tables
from pbxcontrol.service.server import listen, make_server
from tests.conftest import build_provisioned, write_config
from tests.fakeari_http import FakeAriHttp
from tests.plugins.active_calls.hangup_support import hold

legs, leg_history = tables.legs, tables.leg_history

LEGS = [
    # (uniqueid, callid, scustomer, dcustomer, stype, snumber, dtype, dnumber, direction)
    ("1.1", "1.1", 3, 3, "phone", "1001", "phone", "1002", "internal"),
    ("1.2", "1.1", 3, 3, "phone", "1001", "phone", "1002", "internal"),
    ("2.1", "2.1", 3, 3, "external", "0207946000", "phone", "1001", "in"),
    ("3.1", "3.1", 4, 0, "phone", "2001", "external", "0207946000", "out"),
    ("4.1", "4.1", 7, 7, "phone", "3001", "phone", "3001", "internal"),
    ("5.1", "5.1", 0, 0, "", "555", "", "", "internal"),
]


@pytest.fixture(scope="package")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    # Fuzzing sends thousands of wrong passwords from one address: lift the throttle here
    # (tests/core/test_login_throttle.py covers it).
    body = "login_failures_per_user = 1000000\nlogin_failures_per_address = 1000000\n"
    # calls/hangup reaches machine 1 through a local ARI, by the intent worker holding its
    # lease (SPEC §11.2; legs stay listed: no recorder, so the same legs are hung up again and
    # again), without a rate limit.
    ari = FakeAriHttp({u for u, *_ in LEGS})
    path = write_config(tmp, "[plugin:active_calls]\nactions_per_minute = 0\n")
    path.write_text(path.read_text().replace("port = 0\n", "port = 0\n" + body))
    # The ended legs are kept forever: every past `at` the fuzzer makes up is valid and
    # reaches the query over the history (a future one is still a 400).
    path.write_text(path.read_text() + "[recorder]\nhistory_days = 0\n")
    rt = build_provisioned(path)
    rows = [
        dict(
            machine=1,
            uniqueid=u,
            callid=c,
            channel=f"PJSIP/x-{u}",
            start=1000 + i,
            status="Up",
            scustomer=s,
            dcustomer=d,
            stype=st,
            snumber=sn,
            dtype=dt,
            dnumber=dn,
            direction=di,
            recorded=i % 2,  # both values of `recorded` in the answers (SPEC §12)
        )
        for i, (u, c, s, d, st, sn, dt, dn, di) in enumerate(LEGS)
    ]
    with rt.engine.begin() as conn:
        conn.execute(insert(legs), rows)
        # The same calls once before, ended: from 2001 on, lasting a day to three years.
        conn.execute(
            insert(leg_history),
            [
                dict(
                    row, uniqueid=f"h{row['uniqueid']}", start=10**9 + i, ended=10**9 + 86400 * 4**i
                )
                for i, row in enumerate(rows)
            ],
        )
        # A machine flagged not recorded: calls/active/unrecorded answers an entry.
        conn.execute(
            insert(tables.machines).values(id=1, name="m1", recorded=False, renewed_at=999.5)
        )
    holder = hold(rt, 1, ari.url)
    server = make_server(rt.app, listen("127.0.0.1", 0), 4, rt.streams)  # with the live stream
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield rt, f"http://127.0.0.1:{server.effective_port}"
    server.hub.stop()
    server.close()
    holder.stop()
    rt.close()
    ari.close()
