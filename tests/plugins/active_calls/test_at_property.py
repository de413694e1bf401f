"""For random trees, people, legs (live and ended, of every duration class) and moments: the
list with `at` is exactly what a brute-force scan of the history and the live legs gives.

The scan is plain Python: every leg that started at or before the moment and had not ended by
it, with its status and answer time as they were then. Those legs are then made the live
table, and the live list with the same person and parameters (scope, filters, sort, names,
count) is what the answer with `at` must equal, byte for byte once parsed.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import pytest
import webtest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from pbxcontrol import config as config_mod
from pbxcontrol import runtime
from pbxcontrol.auth.passwords import hash_password
from pbxcontrol.plugin import tables
from tests.conftest import LIST, write_config
from tests.plugins.active_calls.test_property import PASSWORD, VALID, load_world, worlds

HISTORY_SPANS, leg_history, legs = tables.history_spans, tables.leg_history, tables.legs
BASE = int(time.time()) - 10 * 86400  # the moments asked about: about ten days ago
#: Durations at and around each class limit, and the open class beyond the last one.
DURATIONS = sorted(
    {0.0, 0.4, 3.0}
    | {float(limit + d) for limit in HISTORY_SPANS for d in (-1, -0.25, 0, 1)}
    | {HISTORY_SPANS[-1] * 1.5}
)


# Valid values (what is compared is the answers, so most requests should be answered); a few
# still are 400 or 402 for some people (a customer or phone not theirs, the system view).
PARAMS = {k: v for k, v in VALID.items() if k not in ("junk", "customer", "phone")}
PARAMS |= {"customer": ["all", "recursive", "system", "1", "2", "3"], "phone": ["PJSIP/l0", "100"]}


@st.composite
def times(draw, second: int) -> dict[str, Any]:
    """A leg's times and states around the moment's whole `second`: most start near it; the
    others start and end at the edge of a duration class (started one class limit before
    the moment, give or take a second, and lasting about that limit)."""
    if draw(st.booleans()):
        start = second - draw(st.integers(-5, 30))
        lasted = draw(st.sampled_from(DURATIONS))
    else:
        limit = draw(st.sampled_from(HISTORY_SPANS))
        start = second - limit - draw(st.integers(-2, 1))
        lasted = limit + draw(st.sampled_from([-1.0, -0.25, 0.0, 0.5]))
    answered = draw(st.sampled_from([None, 0, 1, 5, 40, 70]))
    return {
        "start": start,
        "ended": None if draw(st.booleans()) else start + lasted,
        "answered": 0 if answered is None else start + answered,
        "status": "Up" if answered is not None else draw(st.sampled_from(["Ring", "Down"])),
        "dialled_by": draw(st.sampled_from(["", "u0"])),
    }


@st.composite
def scenes(draw):
    parents, roles, lines, people_legs = draw(worlds())
    second = BASE + draw(st.integers(0, 3600))
    moment = second + draw(st.sampled_from([0.0, 0.5, 0.999]))
    legs_then = [{**row, **draw(times(second))} for row in people_legs]
    return parents, roles, lines, legs_then, moment


def as_then(row: dict[str, Any], moment: float) -> dict[str, Any] | None:
    """The brute force: the leg as it was at `moment`, or None if it was not live then."""
    if row["start"] > moment or (row["ended"] is not None and row["ended"] <= moment):
        return None
    answered = row["answered"]
    then = {k: v for k, v in row.items() if k != "ended"}
    if answered and answered <= moment:
        then.update(status="Up")
    else:
        then.update(answered=0)
        if answered:
            then.update(status="Ringing" if row["dialled_by"] else "Ring")
    return then


@pytest.fixture(scope="module")
def scene_app(database, databases, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("atprop")
    with databases.fresh(database, tmp_path) as url:
        built = runtime.build(config_mod.load(str(write_config(tmp_path, db=url))), record=False)
        built.password_hash = hash_password(PASSWORD)
        yield built, webtest.TestApp(built.app)
        built.close()


def replace_legs(rt, live: list[dict[str, Any]], ended: list[dict[str, Any]]) -> None:
    with rt.engine.begin() as conn:
        conn.execute(delete(leg_history))
        conn.execute(delete(legs))
        if live:
            conn.execute(insert(legs), live)
        if ended:
            conn.execute(insert(leg_history), ended)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    scene=scenes(),
    who=st.integers(1, 7),
    params=st.lists(st.sampled_from(sorted(PARAMS)), unique=True, max_size=4).flatmap(
        lambda names: st.fixed_dictionaries({n: st.sampled_from(PARAMS[n]) for n in names})
    ),
)
def test_at_agrees_with_a_brute_force_scan_of_history_and_live_legs(scene_app, scene, who, params):
    rt, app = scene_app
    parents, roles, lines, all_legs, moment = scene
    who = min(who, max(parents))
    load_world(rt, parents, roles, lines, [])
    replace_legs(
        rt,
        [{k: v for k, v in r.items() if k != "ended"} for r in all_legs if r["ended"] is None],
        [r for r in all_legs if r["ended"] is not None],
    )
    query = ";".join(
        [f"auth_username=p{who}", f"auth_password={PASSWORD}"]
        + [f"{k}={quote(v, safe='')}" for k, v in params.items()]
    )
    past = json.loads(app.get(f"{LIST}?{query};at={moment!r}").body)

    then = [row for row in (as_then(r, moment) for r in all_legs) if row is not None]
    replace_legs(rt, then, [])
    brute = json.loads(app.get(f"{LIST}?{query}").body)
    first = past["responses"][0]
    event(f"code {first['code']} {first['key']}")
    event(f"{min(len(then), 5)} of the world's legs live then (5: or more)")
    if isinstance(brute.get("data"), list):
        event(f"{min(len(brute['data']), 3)} legs answered (3: or more)")
    assert past == brute, (moment, then)
