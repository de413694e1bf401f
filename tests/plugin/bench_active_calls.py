"""Benchmark: calls/active/list on a synthetic database of production size.

    .venv/bin/python -m tests.plugin.bench_active_calls [DIR]   (prints plans and p50/p95)

10,000 live legs, 1,000 customers (20 resellers, sub-customers), 1,000,000 directory rows.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from pbxcontrol.plugins.active_calls import params, query
from sqlalchemy import insert

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from pbxcontrol.db import models
from pbxcontrol.passwords import hash_password
from tests.conftest import write_config
from tests.plugin.conftest import leg

CUSTOMERS, RESELLERS, LEGS, DIRECTORY = 1000, 20, 10_000, 1_000_000


def parent_of(c: int) -> int | None:
    if c == 1:
        return None
    if c <= RESELLERS + 1:
        return 1
    return c - 1 if c % 10 == 5 else c % RESELLERS + 2  # every tenth is a sub-customer


def build(directory: Path):
    rt = runtime.build(config_mod.load(str(write_config(directory))), record=False)
    rnd = random.Random(4)
    numbers = [f"020{n:07d}" for n in range(200_000)]
    with rt.sessions.begin() as s:
        s.execute(insert(models.Customer.__table__), [
            {"id": c, "parent_id": parent_of(c), "name": f"c{c}"}
            for c in range(1, CUSTOMERS + 1)])
        provisioning.rebuild_customer_tree(s)
        pw = hash_password("pw")
        s.execute(insert(models.Person.__table__), [
            {"username": u, "password_hash": pw, "customer_id": c, "role": r, "enabled": True}
            for u, c, r in (("admin", 1, "system owner"), ("res", 2, "reseller"),
                            ("cust", 500, "user"))])
        s.execute(insert(models.Line.__table__), [
            {"endpoint": f"PJSIP/c{c}-{i}", "customer_id": c, "number": f"{c}{i:02d}",
             "name": f"Line {c}/{i}"} for c in range(2, CUSTOMERS + 1) for i in range(3)])
        seen, rows = set(), []
        while len(rows) < DIRECTORY:
            c = rnd.choice([None] + list(range(1, CUSTOMERS + 1)))
            n = rnd.choice(numbers)
            if (n, c) not in seen:
                seen.add((n, c))
                rows.append({"customer_id": c, "number": n, "name": f"name {n}"})
        for i in range(0, DIRECTORY, 50_000):
            s.execute(insert(models.DirectoryEntry.__table__), rows[i:i + 50_000])
    legs = []
    for i in range(LEGS):
        c = 22 + i % (CUSTOMERS - 21)
        legs.append(leg(f"{1700000000 + i}.{i}", f"call{i // 2}", 1700000000 + rnd.randrange(3600),
                        stype="phone", snumber=f"{c}00", scustomer=c, cnumber=rnd.choice(numbers),
                        dnumber=rnd.choice(numbers), dtype="external", direction="out"))
    with rt.engine.begin() as conn:
        conn.execute(insert(models.Leg.__table__), legs)
    return rt


CASES = {
    "customer own view, names=1": ("cust", {"names": "1"}),
    "customer own view": ("cust", {}),
    "reseller recursive, names=1": ("res", {"customer": "recursive", "names": "1"}),
    "reseller recursive count": ("res", {"customer": "recursive", "count": "1"}),
    "reseller all, sort=dnumber": ("res", {"customer": "all", "sort": "dnumber"}),
    "customer snumber contains": ("cust", {"snumber": "500", "names": "1"}),
    "system count": ("admin", {"customer": "system", "count": "1"}),
}


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    started = time.perf_counter()
    rt = build(directory)
    print(f"built {directory} in {time.perf_counter() - started:.0f}s")
    api = rt.api
    with rt.engine.connect() as conn:
        for name, (who, ps) in CASES.items():
            caller = api.authenticator.authenticate(who, "pw")
            wanted, _ = params.parse(ps)
            scope = {"cust": query.Scope(500), "res": query.Scope(2, True, 1),
                     "admin": None}[who]
            if ps.get("customer") == "all":
                scope = query.Scope(2, True, 1, 1)
            stmt, values = query.statement(wanted, scope, caller)
            sql = stmt.compile(rt.engine)
            binds = sql.construct_params(values)
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}",
                                        tuple(binds[k] for k in sql.positiontup)).all()
            print(f"\n== {name} ({caller.username})")
            for row in plan:
                print("   ", row[-1])
    for name, (who, ps) in CASES.items():
        q = ";".join([f"auth_username={who}", "auth_password=pw"]
                     + [f"{k}={v}" for k, v in ps.items()])
        code, body = api.dispatch("calls/active/list", "GET", q, b"")
        assert code == 200, body
        data = orjson.loads(body)["data"]
        rows = data["count"] if isinstance(data, dict) else len(data)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            api.dispatch("calls/active/list", "GET", q, b"")
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        print(f"{name:32s} p50 {statistics.median(times):7.2f} ms  p95 {times[189]:7.2f} ms"
              f"  {rows:6d} legs {len(body):8d} bytes")
    rt.close()


if __name__ == "__main__":
    main()
