"""Random leg changes for property tests: any person, any parameters, up to three legs per
step inserted, updated or ended through the recorder's store (journal included)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from sqlalchemy import insert, select

from pbxcontrol.db import unrecorded
from tests.conftest import TREE
from tests.plugins.active_calls.conftest import leg
from tests.plugins.active_calls.stream_support import write_legs

PARENTS = {c["id"]: c["parent"] for c in TREE["customers"]}
#: Every person who may list (the refusals are tests/plugins/active_calls/test_stream.py's).
PEOPLE = {p["username"]: p for p in TREE["people"] if p.get("enabled", True)}
PEOPLE.pop("panel")
CUSTOMERS = [0, *PARENTS, 3, 4, 7, 99]  # 0: no customer owns that end; 99: not in the tree
NUMBERS = ["1001", "2001", "0207946000", "112", "555"]
PARAMS = {
    "customer": ["", "all", "recursive", "system", *map(str, PARENTS), "99"],
    "recursive": ["0", "1"],
    "direction": ["", "in", "internal", "in_out", "out"],
    "sort": ["start", "snumber", "dnumber", "direction", "uniqueid", "machine", "scustomer"],
    "descending": ["0", "1"],
    "names": ["0", "1"],
    "count": ["0", "1"],
    "callid": ["c0", "c1"],
    "stype": ["phone", "external"],
    "snumber": ["1001", "20", "0"],
    "smatch": ["contains", "exact", "starts", "ends"],
    "dnumber": ["112", "0207946000"],
    "dmatch": ["exact", "ends"],
    "phone": ["PJSIP/alice", "1001", "PJSIP/erin"],
}
UIDS = [f"{n}.1" for n in range(6)]
MACHINES = unrecorded.MACHINES


@st.composite
def fields(draw) -> dict[str, Any]:
    return dict(
        callid=draw(st.sampled_from(["c0", "c1"])),
        scustomer=draw(st.sampled_from(CUSTOMERS)),
        dcustomer=draw(st.sampled_from(CUSTOMERS)),
        stype=draw(st.sampled_from(["phone", "external", ""])),
        snumber=draw(st.sampled_from(NUMBERS)),
        dnumber=draw(st.sampled_from(NUMBERS)),
        direction=draw(st.sampled_from(["in", "out", "internal"])),
        status=draw(st.sampled_from(["Ring", "Ringing", "Up"])),
        channel=draw(st.sampled_from(["PJSIP/alice-1", "PJSIP/trunk1-2", "Local/600@x-3;1"])),
    )


#: A machine's lease gone silent (its legs flagged recorded = 0) or its holder reconciled
#: (recorded = 1 again): SPEC §12, written with journal entries by pbxcontrol.db.unrecorded.
FLIPS = [("dark", 1), ("dark", 2), ("vouch", 1), ("vouch", 2)]

#: One step: up to three legs, each inserted (if not live), updated or ended (if live); or,
#: now and then, a machine's legs flagged or vouched for.
steps = st.lists(
    st.one_of(
        st.lists(
            st.tuples(st.sampled_from(UIDS), st.integers(1, 2), st.booleans(), fields()),
            min_size=1,
            max_size=3,
            unique_by=lambda op: (op[0], op[1]),
        ),
        st.sampled_from(FLIPS),
    ),
    min_size=1,
    max_size=6,
)


def subtree(top: int) -> set[int]:
    def chain(c):
        while c is not None:
            yield c
            c = PARENTS[c]

    return {c for c in PARENTS if top in chain(c)}


def flip(rt, kind: str, machine: int) -> None:
    """Machine `machine`'s legs flagged not recorded (its lease silent since ever) or vouched
    for again, as a watch or the holder writes it."""
    with rt.engine.begin() as conn:
        if conn.execute(select(MACHINES.c.id).where(MACHINES.c.id == machine)).first() is None:
            conn.execute(insert(MACHINES).values(id=machine, name=f"machine {machine}"))
        if kind == "dark":
            unrecorded.flag(conn, machine, 0.0)
        else:
            unrecorded.vouch(conn, machine)


def apply_step(rt, live: dict[tuple[int, str], dict], ops, clock: list[int]) -> None:
    """Write one step through the store, one transaction per machine, as the recorder does
    (or flip a machine's `recorded`)."""
    if isinstance(ops, tuple):
        flip(rt, *ops)
        return
    for machine in (1, 2):
        inserts, updates, ended = [], [], []
        for uid, m, end, values in ops:
            if m != machine:
                continue
            old = live.get((m, uid))
            if old is None:
                clock[0] += 1
                row = live[(m, uid)] = dict(leg(uid, "", clock[0], machine=m), **values)
                inserts.append(row)
            elif end:
                ended.append(live.pop((m, uid)))
            else:
                row = live[(m, uid)] = dict(old, **values)
                updates.append(row)
        if inserts or updates or ended:
            write_legs(rt, machine, upsert=inserts, update=updates, gone=ended)
