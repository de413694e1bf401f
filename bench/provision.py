"""Provisioning at scale: `pbxcontrol provision` of a document with N directory rows.

Fresh SQLite database: the first run inserts every row, the second finds them all unchanged,
a third with every name changed updates them all. Targets: 1M rows in <= 60 s on this machine,
still one transaction. The baseline for the small size is the row-by-row code this replaced,
taken from git history (it is too slow to run at 1M: ~5 min).

    .venv/bin/python bench/provision.py [--rows N] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

TARGET_S = 60.0
#: The last commit with the row-by-row provisioning module (pbxcontrol/provisioning.py).
BASELINE_REV = "914bf91"
CUSTOMERS = 1000


def document(rows: int, seed: int = 1, suffix: str = "") -> dict:
    """A root, 10 resellers, CUSTOMERS customers under them; `rows` directory entries spread
    over the customers, 1% of them global (customer null)."""
    rnd = random.Random(seed)
    customers = [{"id": 1, "name": "Root", "parent": None}]
    customers += [{"id": 1 + r, "name": f"Reseller {r}", "parent": 1} for r in range(1, 11)]
    customers += [
        {"id": 100 + c, "name": f"Customer {c}", "parent": 2 + c % 10} for c in range(CUSTOMERS)
    ]
    directory = []
    for i in range(rows):
        customer = None if i % 100 == 0 else 100 + rnd.randrange(CUSTOMERS)
        name = f"Contact {i} {rnd.choice(('Smith', 'Jones', 'Brown', 'Dentist'))}{suffix}"
        directory.append({"customer": customer, "number": f"0{200000000 + i}", "name": name})
    return {"customers": customers, "directory": directory}


def run_cli(config: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one `pbxcontrol` command."""
    return run_process([sys.executable, "-m", "pbxcontrol", "--config", str(config), *args])


def run_process(argv: list[str]) -> tuple[float, float, str]:
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, cwd=ROOT)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0)
        stdout = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[3:]} failed ({proc.returncode}): {err.strip()}")
    return elapsed, usage.ru_maxrss / 1024, stdout


def fresh_database(tmp: Path, name: str) -> Path:
    config = tmp / f"{name}.ini"
    config.write_text(f"[database]\nurl = sqlite:///{tmp / name}.db\n[plugins]\nenabled =\n")
    config.chmod(0o600)
    run_cli(config, "initdb")
    return config


BASELINE_SCRIPT = textwrap.dedent("""\
    import importlib.util, sys
    from pathlib import Path
    from pbxcontrol.db.engine import make_engine, make_sessionmaker
    spec = importlib.util.spec_from_file_location("old_provisioning", sys.argv[1])
    old = sys.modules["old_provisioning"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    engine = make_engine(sys.argv[2])
    with make_sessionmaker(engine).begin() as session:
        print(old.apply(session, old.load_document(Path(sys.argv[3]).read_bytes())))
""")


def baseline(tmp: Path, doc_path: Path) -> float | None:
    """Seconds the row-by-row code of BASELINE_REV takes for the same document (fresh DB)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BASELINE_REV}:pbxcontrol/provisioning.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    old = tmp / "old_provisioning.py"
    old.write_text(source)
    fresh_database(tmp, "baseline")
    url = f"sqlite:///{tmp / 'baseline'}.db"
    argv = [sys.executable, "-c", BASELINE_SCRIPT, str(old), url, str(doc_path)]
    return run_process(argv)[0]


def bench_size(results: common.Results, rows: int, with_baseline: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        doc_path = tmp / "doc.json"
        doc_path.write_text(json.dumps(document(rows)))
        size_mb = doc_path.stat().st_size / 2**20
        config = fresh_database(tmp, "bench")
        first, rss, _ = run_cli(config, "provision", str(doc_path))
        second, _, _ = run_cli(config, "provision", str(doc_path))
        doc_path.write_text(json.dumps(document(rows, suffix=" (moved)")))
        third, _, _ = run_cli(config, "provision", str(doc_path))
        old = baseline(tmp, doc_path) if with_baseline else None
    name = f"provision.{rows // 1000}k"
    note = f"{rows} directory rows, {size_mb:.0f} MB document, fresh SQLite"
    if old is None:
        results.add(
            f"{name}.insert_s",
            first,
            "s",
            target=f"<= {TARGET_S:.0f}",
            met=first <= TARGET_S if rows >= 1_000_000 else None,
            note=note,
        )
    else:
        results.add(
            f"{name}.insert_s",
            first,
            "s",
            baseline=old,
            baseline_name=f"row-by-row provisioning ({BASELINE_REV})",
            note=note,
        )
    results.add(f"{name}.insert_rows_per_s", rows / first, "rows/s")
    results.add(f"{name}.unchanged_s", second, "s", note="second run: every row unchanged")
    results.add(f"{name}.update_s", third, "s", note="third run: every name changed")
    results.add(f"{name}.peak_rss_mb", rss, "MB", note="first run, the whole CLI process")


def run(results: common.Results, quick: bool) -> None:
    """The bench/run.py part: 50k against the old code, then 1M against the target."""
    bench_size(results, 50_000, with_baseline=True)
    if not quick:
        bench_size(results, 1_000_000, with_baseline=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="directory rows")
    parser.add_argument("--baseline", action="store_true", help="also time the row-by-row code")
    args = parser.parse_args()
    bench_size(common.Results(), args.rows, args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
