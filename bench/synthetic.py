"""A synthetic database of production size: 1,000 customers in a 4-level tree, up to 100,000
live legs, 1,000,000 directory rows.

Customer OWN (500) always has exactly OWN_LEGS legs, whatever the table size, so its view is a
fixed-size result; every other leg goes round-robin to the other customers.
"""

from __future__ import annotations

import random
from pathlib import Path

from sqlalchemy import delete, insert

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from pbxcontrol.auth.passwords import hash_password
from pbxcontrol.db import journal, models
from pbxcontrol.db.models import LEG_INT_FIELDS, LEG_STRING_FIELDS

CUSTOMERS, RESELLERS = 1000, 20
OWN, OWN_LEGS = 500, 10
RESELLER = 2
PASSWORD = "pw"
PEOPLE = (("admin", 1, "system owner"), ("res", RESELLER, "reseller"), ("cust", OWN, "user"))


def parent_of(c: int) -> int | None:
    """Root 1; resellers 2..21; customers under them; every tenth one a sub-customer."""
    if c == 1:
        return None
    if c <= RESELLERS + 1:
        return 1
    return c - 1 if c % 10 == 5 else c % RESELLERS + 2


def write_config(directory: Path, memory_view: bool = True) -> Path:
    path = directory / ("pbxcontrol.ini" if memory_view else "pbxcontrol-sql.ini")
    path.write_text(
        f"[database]\nurl = sqlite:///{directory / 'bench.db'}\n"
        "[http]\nhost = 127.0.0.1\nport = 0\n"
        "[logging]\nlevel = WARNING\n[plugins]\nenabled = active_calls\n"
        # The response cache would answer repeated requests from memory; these
        # figures are the cost of computing an answer.
        "[plugin:active_calls]\ncache_megabytes = 0\n"
        f"memory_view = {'yes' if memory_view else 'no'}\n"
    )
    path.chmod(0o600)
    return path


class SyntheticDb:
    """The runtime (as `pbxcontrol api` builds it) over a generated SQLite file."""

    def __init__(self, directory: Path, directory_rows: int = 1_000_000, seed: int = 4):
        self.rt = runtime.build(config_mod.load(str(write_config(directory))), record=False)
        self.rnd = random.Random(seed)
        self.numbers = [f"020{n:07d}" for n in range(200_000)]
        self.directory = directory
        self.legs = 0  # live now
        self.next = 0  # the next leg's number (legs 0 .. next-1 were made; the oldest ended)
        self._fill(directory_rows)

    def _fill(self, directory_rows: int) -> None:
        rnd = self.rnd
        with self.rt.sessions.begin() as s:
            s.execute(
                insert(models.Customer.__table__),
                [
                    {"id": c, "parent_id": parent_of(c), "name": f"c{c}"}
                    for c in range(1, CUSTOMERS + 1)
                ],
            )
            provisioning.rebuild_customer_tree(s)
            pw = hash_password(PASSWORD)
            s.execute(
                insert(models.Person.__table__),
                [
                    {
                        "username": u,
                        "password_hash": pw,
                        "customer_id": c,
                        "role": r,
                        "enabled": True,
                    }
                    for u, c, r in PEOPLE
                ],
            )
            s.execute(
                insert(models.Line.__table__),
                [
                    {
                        "endpoint": f"PJSIP/c{c}-{i}",
                        "customer_id": c,
                        "number": f"{c}{i:02d}",
                        "name": f"Line {c}/{i}",
                    }
                    for c in range(2, CUSTOMERS + 1)
                    for i in range(3)
                ],
            )
            seen: set[tuple[str, int | None]] = set()
            rows = []
            owners = [None, *range(1, CUSTOMERS + 1)]
            while len(rows) < directory_rows:
                c, n = rnd.choice(owners), rnd.choice(self.numbers)
                if (n, c) not in seen:
                    seen.add((n, c))
                    rows.append({"customer_id": c, "number": n, "name": f"name {n}"})
            for i in range(0, len(rows), 50_000):
                s.execute(insert(models.DirectoryEntry.__table__), rows[i : i + 50_000])

    def sql_runtime(self) -> runtime.Runtime:
        """A second runtime on the same file answering by the list's SQL (memory_view = no)."""
        config = config_mod.load(str(write_config(self.directory, memory_view=False)))
        return runtime.build(config, record=False)

    def grow_to(self, legs: int) -> None:
        """Add legs until the table holds `legs` of them (a bulk write: a journal reset)."""
        rows = [self._leg(i) for i in range(self.next, self.next + legs - self.legs)]
        with self.rt.engine.begin() as conn:
            for i in range(0, len(rows), 20_000):
                conn.execute(insert(models.LEGS_TABLE), rows[i : i + 20_000])
            journal.record_reset(conn)
        self.next += len(rows)
        self.legs = max(self.legs, legs)

    def churn(self) -> None:
        """One call ends and a new one starts: the oldest leg (not OWN's) goes, a new leg
        comes, with their journal entries, in one transaction, as the recorder's store does."""
        gone = self.next - self.legs + OWN_LEGS  # the oldest leg still live after OWN's
        uid = f"{1700000000 + gone}.{gone}"
        row = self._leg(self.next)
        legs = models.LEGS_TABLE
        with self.rt.engine.begin() as conn:
            before = journal.scope_keys(conn, 1, [uid])
            conn.execute(delete(legs).where(legs.c.machine == 1, legs.c.uniqueid == uid))
            conn.execute(insert(legs), [row])
            journal.record_legs(conn, 1, [row], [uid], before)
        self.next += 1

    def _leg(self, i: int) -> dict:
        if i < OWN_LEGS:
            c = OWN
        else:
            c = 22 + i % (CUSTOMERS - 21)
            c = c + 1 if c == OWN else c
        rnd = self.rnd
        row: dict = {name: "" for name in LEG_STRING_FIELDS}
        row.update({name: 0 for name in LEG_INT_FIELDS})
        uniqueid = f"{1700000000 + i}.{i}"
        row.update(
            machine=1,
            uniqueid=uniqueid,
            callid=f"call{i // 2}",
            start=1700000000 + rnd.randrange(3600),
            status="Up",
            channel=f"PJSIP/c{c}-{i:08x}",
            direction="out",
            stype="phone",
            snumber=f"{c}00",
            scustomer=c,
            cnumber=rnd.choice(self.numbers),
            dnumber=rnd.choice(self.numbers),
            dtype="external",
        )
        return row

    def close(self) -> None:
        self.rt.close()
