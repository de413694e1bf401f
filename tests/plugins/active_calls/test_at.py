"""calls/active/list and its stream with `at` (SPEC §14): the legs live at a past moment, from
the history of ended legs and the live table, as they were then; its errors; its plan."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import webtest
from sqlalchemy import insert, text

from pbxcontrol.plugin import Caller, tables
from plugins.active_calls import params, query
from tests.conftest import build_provisioned, cli, write_config
from tests.plugins.active_calls.conftest import ALICE, errors, get, ids, leg
from tests.plugins.active_calls.stream_support import Client, serving
from tests.plugins.active_calls.stream_support import query as stream_query

HISTORY_SPANS, leg_history, legs = tables.history_spans, tables.leg_history, tables.legs
NOW = int(time.time())
T = NOW - 7200  # the moments asked about are around two hours ago
DAY = 86400


def ended(row: dict[str, Any], at: float, dialled_by: str = "") -> dict[str, Any]:
    """A history row: every row has the same keys (one executemany takes the first's)."""
    return dict(row, ended=at, cause=16, cause_txt="Normal Clearing", dialled_by=dialled_by)


INTERNAL = dict(ALICE, dcustomer=3, dtype="phone", dnumber="1002", cnumber="1002")
HISTORY = [
    # Acme: alice calls bob; bob rings 10 s, they talk, it ends at T+100.5.
    ended(leg("h1.1", "h1.1", T, answered=T + 10, **INTERNAL), T + 100.5),
    ended(leg("h1.2", "h1.1", T + 1, answered=T + 10, **INTERNAL), T + 100.5, "h1.1"),
    # Beta: a call that rang 30 s and was never answered.
    ended(leg("h2.1", "h2.1", T + 20, status="Ringing", scustomer=4, dcustomer=4), T + 50, "x"),
    # Gamma: a leg of three weeks (a duration class of its own).
    ended(leg("h3.1", "h3.1", T - 21 * DAY, answered=T - 21 * DAY + 5, scustomer=7), T + 3600),
    # Acme Branch (under Acme) calls out for a second.
    ended(leg("h4.1", "h4.1", T + 30, answered=T + 40, scustomer=5, direction="out"), T + 41.5),
    # No customer's.
    ended(leg("h5.1", "h5.1", T, answered=T + 1), T + 200),
]
LIVE = [
    leg("l1.1", "l1.1", T + 60, answered=T + 70, **ALICE),  # Acme, still up
    leg("l2.1", "l2.1", NOW - 10, status="Ring", **ALICE),  # started after every moment asked
]


@pytest.fixture(scope="module")
def past(database, databases, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("at")
    with databases.fresh(database, tmp_path) as url:
        rt = build_provisioned(write_config(tmp_path, db=url))
        with rt.engine.begin() as conn:
            conn.execute(insert(leg_history), HISTORY)
            conn.execute(insert(legs), LIVE)
        yield rt, webtest.TestApp(rt.app)
        rt.close()


def board(app, at: float | str, **params: str) -> dict[str, dict[str, Any]]:
    envelope = get(app, at=str(at), **params)
    return {uid: row for uid, row in zip(ids(envelope), envelope["data"], strict=True)}


def states(app, at: float | str, **params: str) -> dict[str, tuple[str, int]]:
    return {u: (r["status"], r["answered"]) for u, r in board(app, at, **params).items()}


def test_a_call_ringing_then_is_listed_as_ringing_and_unanswered(past):
    _, app = past
    # The leg that placed the call rings in state Ring, the dialled one Ringing (Asterisk).
    assert states(app, T + 5) == {"h1.1": ("Ring", 0), "h1.2": ("Ringing", 0)}
    assert states(app, T + 9.99) == {"h1.1": ("Ring", 0), "h1.2": ("Ringing", 0)}


def test_after_its_answer_it_is_up_with_its_answer_time(past):
    _, app = past
    assert states(app, T + 10) == {"h1.1": ("Up", T + 10), "h1.2": ("Up", T + 10)}
    row = board(app, T + 50)["h1.2"]
    # Every field as recorded; `recorded` (SPEC §12) is not a stored field but its machine's
    # state: 1 here, where nobody has flagged the machine.
    assert row.pop("recorded") == 1
    assert row == {name: HISTORY[1][name] for name in row}


def test_a_leg_is_live_from_its_start_until_its_end(past):
    _, app = past
    assert list(board(app, T)) == ["h1.1"]  # started at the moment: live
    assert list(board(app, T + 100.4)) == ["h1.1", "h1.2", "l1.1"]
    assert list(board(app, T + 100.5)) == ["l1.1"]  # ended at the moment: gone


def test_live_legs_started_by_then_are_listed_as_they_were(past):
    _, app = past
    assert states(app, T + 65)["l1.1"] == ("Ring", 0)
    assert states(app, T + 70)["l1.1"] == ("Up", T + 70)
    assert "l2.1" not in board(app, NOW - 11) and "l2.1" in board(app, NOW - 10)


def test_a_never_answered_leg_keeps_the_state_it_rang_in(past):
    _, app = past
    assert states(app, T + 25, as_="beta") == {"h2.1": ("Ringing", 0)}


def test_a_leg_of_weeks_is_found_at_any_moment_of_it(past):
    _, app = past
    assert list(board(app, T - 2 * DAY, as_="gamma")) == ["h3.1"]
    assert list(board(app, T + 3599, as_="gamma")) == ["h3.1"]
    assert list(board(app, T + 3600, as_="gamma")) == []


def test_scopes_and_visibility_are_the_live_lists(past):
    _, app = past
    at = T + 35
    assert list(board(app, at)) == ["h1.1", "h1.2"]
    assert list(board(app, at, recursive="1")) == ["h1.1", "h1.2", "h4.1"]
    assert list(board(app, at, as_="beta")) == ["h2.1"]
    assert list(board(app, at, as_="reseller", customer="recursive")) == [
        "h1.1",
        "h1.2",
        "h2.1",
        "h4.1",
    ]
    system = board(app, at, as_="admin", customer="system")
    assert list(system) == ["h3.1", "h1.1", "h5.1", "h1.2", "h2.1", "h4.1"]
    assert errors(get(app, at=str(at), customer="4")) == [("400", "customer")]
    assert errors(get(app, at=str(at), as_="acme", customer="system")) == [("402", "customer")]


def test_filters_sort_count_and_names_apply(past):
    _, app = past
    at = T + 35
    assert list(board(app, at, recursive="1", direction="out")) == ["h4.1"]
    assert list(board(app, at, recursive="1", sort="uniqueid", descending="1")) == [
        "h4.1",
        "h1.2",
        "h1.1",
    ]
    assert list(board(app, at, callid="h1.1", phone="PJSIP/alice")) == ["h1.1", "h1.2"]
    assert get(app, at=str(at), recursive="1", count="1")["data"] == {"count": 3}
    named = board(app, at, names="1")
    assert (named["h1.1"]["snumber_name"], named["h1.1"]["dnumber_name"]) == (
        "Alice Smith",
        "Bob Jones",
    )


def test_at_is_a_unix_time_or_iso_8601_with_an_offset(past):
    _, app = past
    moment = datetime.fromtimestamp(T + 5, timezone(timedelta(hours=2)))
    expected = states(app, T + 5)
    assert states(app, f"{T + 5}.0") == expected
    assert states(app, moment.isoformat()) == expected
    assert states(app, moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")) == expected
    # An unencoded "+" in a query string arrives as a space: read as the offset's sign.
    plain = app.get(
        f"/api/json/calls/active/list/?auth_username=acme;auth_password=acme-pass;"
        f"at={moment.isoformat()}"
    ).json
    assert {r["uniqueid"] for r in plain["data"]} == set(expected)


@pytest.mark.parametrize(
    "at, says",
    [
        ("yesterday", "must be a Unix time"),
        ("2026-12-06T14:03:00", "must have an offset"),
        ("1e9", "must be a Unix time"),
        (str(NOW + 365 * DAY), "in the future"),
        (str(NOW - 31 * DAY), "before the kept history (the last 30 days)"),
    ],
    ids=["word", "no-offset", "float", "future", "too-old"],  # stable ids: NOW moves
)
def test_a_bad_at_is_a_400_with_key_at(past, at, says):
    _, app = past
    envelope = get(app, at=at, direction="sideways")
    assert errors(envelope) == [("400", "direction"), ("400", "at")]
    assert says in envelope["responses"][1]["message"]


def test_the_stream_at_a_moment_sends_one_snapshot_and_ends(past):
    rt, app = past
    with serving(rt) as address:
        client = Client(address, stream_query("acme", at=str(T + 5), names="1"))
        assert client.header("Content-Type") == "text/event-stream"
        with pytest.raises(EOFError):  # the connection closes after the snapshot
            while True:
                client.read_event()
        [(_, kind, data)] = client.events
        assert kind == "snapshot"
        assert data == {"data": get(app, at=str(T + 5), names="1")["data"]}
        counted = Client(address, stream_query("acme", at=str(T + 50), count="1"))
        counted.read_until(lambda c: c.events)
        assert counted.events[0][1:] == ("snapshot", {"count": 2})
        bad = Client(address, stream_query("acme", at=str(NOW + 365 * DAY)))
        assert errors(bad.envelope()) == [("400", "at")]


def test_the_history_is_read_through_its_span_indexes_not_scanned(past):
    """In the plan of every scope, each read of the history is a bounded range of one duration
    class on a span index (or a row by its id), never a scan. PostgreSQL is told sequential
    scans are dear: the tables here are tiny."""
    rt, _ = past
    caller = Caller("reseller", 2, "reseller", frozenset(), False)
    scopes = [query.Scope(3), query.Scope(2, subtree=True, min_depth=1), None]
    with rt.engine.begin() as conn:
        for scope in scopes:
            wanted, _ = params.parse({"at": str(T)})
            statements, values = query.statement(wanted, scope, caller)
            reads = _history_reads(conn, statements.listing, values)
            assert len(reads) > len(HISTORY_SPANS), reads
            for index, condition in reads:
                if index.startswith("pk_") or "PRIMARY KEY" in index:
                    continue
                assert index.endswith("_span"), reads
                assert "span" in condition and "start" in condition, reads


def _history_reads(conn, statement, values) -> list[tuple[str, str]]:
    """(index, its condition) of each read of leg_history in the plan; a scan fails."""
    sql = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    if conn.dialect.name == "sqlite":
        args = tuple(sql.construct_params(values)[k] for k in sql.positiontup)
        lines = [
            row[3]
            for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(sql), args)
            if " leg_history " in f"{row[3]} "
        ]
        assert not any(line.startswith("SCAN") for line in lines), lines
        found = [re.search(r"USING (?:INDEX )?(.+?) \((.*)\)$", line) for line in lines]
        assert all(found), lines
        return [(m[1], m[2]) for m in found if m]
    conn.execute(text("SET LOCAL enable_seqscan = off"))
    [plan] = conn.exec_driver_sql(
        "EXPLAIN (FORMAT JSON) " + str(sql), sql.construct_params(values)
    ).scalar_one()
    reads = []
    nodes = [plan["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if node.get("Relation Name") == "leg_history":
            assert node["Node Type"] != "Seq Scan", node
        if node.get("Index Name", "").startswith(("ix_leg_history", "pk_leg_history")):
            reads.append((node["Index Name"], node.get("Index Cond", "")))
    return reads


# -- pbxcontrol calls --at ------------------------------------------------------------------


def test_the_command_line_lists_the_board_at_a_moment_as_the_api_does(past):
    rt, app = past
    done = cli(rt.config.path, "calls", "--at", str(T + 50), "--json", "--names")
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)
        == get(app, as_="admin", customer="system", at=str(T + 50), names="1")["data"]
    )
    done = cli(rt.config.path, "calls", "--at", str(T + 50), "--customer", "3")
    lines = done.stdout.splitlines()
    assert [line.split()[6] for line in lines[1:]] == ["h1.1", "h1.2"]
    # Ages counted to the moment: h1.1 started 50 s before it.
    assert [line.split()[0] for line in lines[1:]] == ["00:00:50", "00:00:49"]


@pytest.mark.parametrize(
    "args, error",
    [
        (("--at", str(NOW + 365 * DAY)), "error: at: is in the future"),
        (("--at", "noon"), "error: at: must be a Unix time"),
        (("--at", str(T), "--watch"), "error: --at shows one past moment"),
    ],
    ids=["future", "word", "watch"],  # stable ids: NOW moves
)
def test_the_command_line_says_what_is_wrong_with_at(past, args, error):
    rt, _ = past
    done = cli(rt.config.path, "calls", *args)
    assert done.returncode == 2 and done.stderr.startswith(error), done.stderr
