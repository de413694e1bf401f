"""The system view after a change on PostgreSQL, in process (issue 21's target: <= 25 ms server
side at 20,000 live legs): bench/views.py's synthetic database on a fresh database of the
sandbox (scripts/postgres-sandbox), one call ending and one starting before every timed
request (written as the recorder's store writes them), JsonApi.dispatch timed — no HTTP, no
stream hub, no other process: the cost of computing the answer.

    .venv/bin/python bench/sysview_pg.py [--legs 20000] [--directory 20000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import synthetic, views  # noqa: E402
from pbxcontrol.db import migrate  # noqa: E402
from pbxcontrol.db.engine import make_engine  # noqa: E402

SYSTEM = ("admin", "customer=system;names=1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=20_000)
    parser.add_argument("--directory", type=int, default=20_000, help="directory rows")
    parser.add_argument("--profile", action="store_true", help="cProfile 20 requests")
    args = parser.parse_args()
    admin_url = subprocess.run(
        [str(ROOT / "scripts" / "postgres-sandbox"), "url"], capture_output=True, text=True
    ).stdout.strip()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"sysview_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url, poolclass=NullPool)
        migrate.upgrade(engine)
        engine.dispose()
        measure(url, args)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def measure(url: str, args: argparse.Namespace) -> None:
    def write_config(directory: Path, memory_view: bool = True) -> Path:
        path = directory / "pbxcontrol.ini"
        path.write_text(
            f"[database]\nurl = {url}\n[http]\nhost = 127.0.0.1\nport = 0\n"
            "[logging]\nlevel = WARNING\n[plugins]\nenabled = active_calls\n"
            "[plugin:active_calls]\ncache_megabytes = 0\n"
        )
        path.chmod(0o600)
        return path

    synthetic.write_config = write_config  # the same database, on PostgreSQL
    with tempfile.TemporaryDirectory(prefix="pbx-sysview-") as tmp:
        db = synthetic.SyntheticDb(Path(tmp), args.directory)
        try:
            db.grow_to(args.legs)
            times, rows = views.measure_view(db.rt.api, *SYSTEM, 3.0, 60, change=db.churn)
            times.sort()
            print(
                f"system view after a change, {rows} legs: p50 {times[len(times) // 2]:.1f} ms,"
                f" p90 {times[int(len(times) * 0.9)]:.1f} ms ({len(times)} runs)"
            )
            if args.profile:
                query = views._query(*SYSTEM)
                profile = cProfile.Profile()
                for _ in range(20):
                    db.churn()
                    profile.enable()
                    db.rt.api.dispatch("calls/active/list", "GET", query, b"")
                    profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        finally:
            db.close()


if __name__ == "__main__":
    main()
