"""The present beside the history bench's month: synthetic.py's tree and people, a directory,
1,000 live legs, and calls that end and start as the recorder writes them (live table,
history, change journal; recorder/store.py)."""

from __future__ import annotations

import random
import time
from typing import Any

from sqlalchemy import insert

from bench.synthetic import CUSTOMERS, OWN, OWN_LEGS, PASSWORD, PEOPLE, parent_of
from pbxcontrol import provisioning, runtime
from pbxcontrol.auth.passwords import hash_password
from pbxcontrol.db import models
from pbxcontrol.db.models import LEG_INT_FIELDS, LEG_STRING_FIELDS
from pbxcontrol.recorder import store
from pbxcontrol.recorder.live import Changes

LIVE_LEGS = 1_000
DIRECTORY_ROWS = 100_000


class LiveCalls:
    """A provisioned runtime with LIVE_LEGS live legs (OWN_LEGS of them customer OWN's)."""

    def __init__(self, rt: runtime.Runtime, seed: int = 4):
        self.rt = rt
        self.rnd = random.Random(seed)
        self.numbers = [f"020{n:07d}" for n in range(50_000)]
        self.next = 0
        self.live: list[dict[str, Any]] = []
        self._provision()
        self._write([self._leg() for _ in range(LIVE_LEGS)], [])

    def _provision(self) -> None:
        rnd = self.rnd
        with self.rt.sessions.begin() as s:
            s.execute(
                insert(models.Customer.__table__),
                [{"id": c, "parent_id": parent_of(c), "name": f"c{c}"} for c in range(1, 1001)],
            )
            provisioning.rebuild_customer_tree(s)
            pw = hash_password(PASSWORD)
            s.execute(
                insert(models.Person.__table__),
                [
                    {"username": u, "password_hash": pw, "customer_id": c, "role": r}
                    for u, c, r in PEOPLE
                ],
            )
            seen: set[tuple[str, int | None]] = set()
            rows = []
            owners = [None, *range(1, CUSTOMERS + 1)]
            while len(rows) < DIRECTORY_ROWS:
                c, n = rnd.choice(owners), rnd.choice(self.numbers)
                if (n, c) not in seen:
                    seen.add((n, c))
                    rows.append({"customer_id": c, "number": n, "name": f"name {n}"})
            s.execute(insert(models.DirectoryEntry.__table__), rows)

    def _leg(self) -> dict[str, Any]:
        i = self.next
        self.next += 1
        c = OWN if i < OWN_LEGS else 22 + i % (CUSTOMERS - 21)
        c = c + 1 if c == OWN and i >= OWN_LEGS else c
        row: dict[str, Any] = {name: "" for name in LEG_STRING_FIELDS}
        row.update({name: 0 for name in LEG_INT_FIELDS})
        now = int(time.time())
        row.update(
            machine=1,
            uniqueid=f"{now}.live{i}",
            callid=f"{now}.live{i}",
            start=now,
            status="Up",
            channel=f"PJSIP/c{c}-live{i:08x}",
            direction="out",
            stype="phone",
            snumber=f"{c}00",
            scustomer=c,
            cnumber=self.rnd.choice(self.numbers),
            dnumber=self.rnd.choice(self.numbers),
            dtype="external",
        )
        return row

    def churn(self) -> None:
        """One call ends (the oldest not OWN's, into the history) and a new one starts."""
        gone = self.live.pop(OWN_LEGS)
        self._write([self._leg()], [gone])

    def _write(self, new: list[dict[str, Any]], gone: list[dict[str, Any]]) -> None:
        ended = [
            dict(row, ended=time.time(), cause=16, cause_txt="Normal Clearing") for row in gone
        ]
        changes = Changes(new, [], ended, [r["uniqueid"] for r in gone], lambda: None)
        with self.rt.sessions.begin() as session:
            store.write(changes, 1, session)
        self.live += new

    def close(self) -> None:
        self.rt.close()
