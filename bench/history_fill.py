"""Ten million ended legs, synthetic but shaped like a month of a busy installation, written
fast into `leg_history` on SQLite (one transaction, executemany) or PostgreSQL (COPY).

The shape: 30 days ending now; calls follow the day (quiet nights, busy working hours,
quieter weekends); 1,000 customers (synthetic.py's tree) with Zipf-like sizes (the biggest
has ~100 times the median's calls); a call is two legs (the caller's, the dialled one), in,
out or internal; 75% answered after 2-20 s of ringing and lasting a log-normal time (median
90 s, a few hours at most), the others ringing 5-40 s; one leg in 2,000 stays days (a line
left open). Plus a *surge*: 10,000 legs (5,000 calls) live at one moment, `surge_at`, for
the system view's figure. Legs are written in the order they ended would be recorded
(by start), the secondary indexes built after the rows, as a restore would.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from bench.synthetic import CUSTOMERS, RESELLERS
from pbxcontrol.db.models import LEG_HISTORY_TABLE

DAYS = 30
SURGE_LEGS = 10_000
COLUMNS = (
    "machine",
    "uniqueid",
    "callid",
    "channel",
    "start",
    "answered",
    "status",
    "stype",
    "snumber",
    "scustomer",
    "cnumber",
    "dtype",
    "dnumber",
    "dcustomer",
    "peer",
    "direction",
    "callerid_internal",
    "callername_internal",
    "dialled_by",
    "ended",
    "cause",
    "cause_txt",
)


@dataclass(frozen=True)
class Month:
    """What was generated: its time span and the surge's moment."""

    legs: int
    first: int  # Unix time of the earliest start
    end: int  # Unix time the month ends (just before now)
    surge_at: int


def month_of(legs: int, seed: int = 25) -> tuple[Month, Iterator[tuple[Any, ...]]]:
    """The month's shape and its rows (COLUMNS order), `legs` of them, by start."""
    rnd = random.Random(seed)
    end = int(time.time()) - 600
    first = end - DAYS * 86400
    surge_at = first + 20 * 86400 + 14 * 3600  # a weekday, 14:00 UTC, twenty days in
    month = Month(legs, first, end, surge_at)
    return month, _rows(rnd, month)


def _minute_weights(first: int) -> list[float]:
    weights = []
    for minute in range(DAYS * 1440):
        at = time.gmtime(first + minute * 60)
        hour = at.tm_hour + at.tm_min / 60
        day = 0.25 + 1.2 * math.exp(-(((hour - 13.0) / 4.0) ** 2))  # quiet night, busy day
        weights.append(day * (0.4 if at.tm_wday >= 5 else 1.0))
    return weights


def _customer_weights() -> tuple[list[int], list[float]]:
    customers = list(range(RESELLERS + 2, CUSTOMERS + 1))
    rnd = random.Random(7)
    rnd.shuffle(customers)  # sizes not in id order
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(customers))]
    return customers, weights


def biggest_customer() -> int:
    """The customer with the most calls."""
    return _customer_weights()[0][0]


def _rows(rnd: random.Random, month: Month) -> Iterator[tuple[Any, ...]]:
    calls = (month.legs - SURGE_LEGS) // 2
    minutes = rnd.choices(range(DAYS * 1440), weights=_minute_weights(month.first), k=calls)
    starts = sorted(month.first + m * 60 + rnd.random() * 60 for m in minutes)
    del minutes
    surge = sorted(month.surge_at - rnd.uniform(1, 3600) for _ in range(SURGE_LEGS // 2))
    customers, weights = _customer_weights()
    owners = rnd.choices(customers, weights=weights, k=calls + len(surge))
    for number, (start, surging) in enumerate(_merged(starts, surge)):
        live_at = month.surge_at if surging else None
        yield from _call(rnd, number + 1, start, owners[number], live_at)


def _merged(starts: list[float], surge: list[float]) -> Iterator[tuple[float, bool]]:
    i = j = 0
    while i < len(starts) or j < len(surge):
        if j >= len(surge) or (i < len(starts) and starts[i] <= surge[j]):
            yield starts[i], False
            i += 1
        else:
            yield surge[j], True
            j += 1


def _call(
    rnd: random.Random, n: int, start: float, owner: int, live_at: int | None
) -> Iterator[tuple[Any, ...]]:
    """The two legs of call number `n` of customer `owner`."""
    ring = rnd.uniform(2, 20)
    answered = rnd.random() < 0.75
    if live_at is not None:  # the surge: still live at that moment
        lasted = live_at - start + rnd.uniform(1, 3600)
        answered = True
    elif rnd.random() < 0.0005:
        lasted = rnd.uniform(86400, 3 * 86400)
    elif answered:
        lasted = ring + min(4 * 3600, rnd.lognormvariate(math.log(90), 1.1))
    else:
        lasted = rnd.uniform(5, 40)
    kind = rnd.random()
    direction = "in" if kind < 0.4 else "out" if kind < 0.75 else "internal"
    phone, far = f"{owner}{rnd.randrange(100):02d}", f"020{rnd.randrange(10**7):07d}"
    if direction == "in":
        source = ("external", far, owner, f"0{owner:04d}000", "phone", phone, owner, 0)
    elif direction == "out":
        source = ("phone", phone, owner, far, "external", far, 0, 1)
    else:
        other = f"{owner}{rnd.randrange(100):02d}"
        source = ("phone", phone, owner, other, "phone", other, owner, 0)
    stype, snumber, scustomer, cnumber, dtype, dnumber, dcustomer, peer = source
    begin = int(start)
    up = begin + int(ring) if answered else 0
    ended = start + lasted
    caller = f"{begin}.{2 * n}"
    for leg, dialled_by in ((caller, ""), (f"{begin}.{2 * n + 1}", caller)):
        yield (
            1,
            leg,
            caller,
            f"PJSIP/{'trunk1' if stype == 'external' and not dialled_by else phone}-{n:08x}",
            begin + (1 if dialled_by and begin + 1 < ended else 0),
            up,
            "Up" if answered else ("Ringing" if dialled_by else "Ring"),
            stype,
            snumber,
            scustomer,
            cnumber,
            dtype,
            dnumber,
            dcustomer,
            peer,
            direction,
            snumber,
            f"Caller {snumber[-4:]}",
            dialled_by,
            ended,
            16 if answered else 19,
            "Normal Clearing" if answered else "No answer",
        )


def fill(engine: Engine, legs: int) -> tuple[Month, float]:
    """Write the month into `engine`'s leg_history; (the month, seconds it took)."""
    started = time.perf_counter()
    month, rows = month_of(legs)
    secondary = [ix for ix in LEG_HISTORY_TABLE.indexes]
    with engine.begin() as conn:
        for index in secondary:
            index.drop(conn)
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            _copy(raw, rows)
        else:
            _executemany(raw, rows)
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET maintenance_work_mem = '512MB'"))
        for index in secondary:
            index.create(conn)
    settle(engine)
    return month, time.perf_counter() - started


def settle(engine: Engine) -> None:
    """On PostgreSQL, what autovacuum does after loads: every table vacuumed and analysed."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def _executemany(raw: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    cursor = raw.cursor()
    cursor.execute("PRAGMA cache_size = -1000000")  # 1 GB for the load
    marks = ", ".join("?" * len(COLUMNS))
    cursor.executemany(f"INSERT INTO leg_history ({', '.join(COLUMNS)}) VALUES ({marks})", rows)


def _copy(raw: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    pg: Any = raw.driver_connection
    statement = f"COPY leg_history ({', '.join(COLUMNS)}) FROM STDIN"
    with pg.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
