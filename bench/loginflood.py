"""A flood of logins with random usernames against one real `pbxcontrol api` (SPEC §13).

200 clients (threads of a process of their own, each on a keep-alive connection) send logins
with random usernames and passwords as fast as they are answered, for `SECONDS`. Meanwhile a
right login from an address without failures (a new person each time, so each is a real
argon2 check, never the process's cache) every half second, and the service's RSS (sampled,
and the kernel's high-water mark after resetting it). Scenarios, by where the flood comes
from (through a trusted proxy's X-Forwarded-For, as behind nginx):

- `one64`: random addresses of one IPv6 /64 (the attack of issue 23: one host, billions of
  addresses);
- `one`: one address;
- `spread`: a new random IPv4 address for every attempt (a botnet: no address is ever
  locked, every attempt costs a password check). No target: the figure shows what the
  process's 2 password-check slots do there.

    .venv/bin/python bench/run.py --only loginflood [--quick]
    .venv/bin/python bench/loginflood.py [--quick] [--scenario one64]   (prints JSON)
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

CLIENTS = 200
SECONDS = 20
PROBES = 60  # people who log in rightly during the flood, one each time
SCENARIOS = ("one64", "one", "spread")
TARGETS = {"one64", "one"}  # SPEC §13's figures; `spread` is shown without a target


def flood_address(scenario: str, rng: random.Random) -> str | None:
    if scenario == "one64":
        return "2001:db8:bad:1:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(4))
    if scenario == "spread":
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return None  # the proxy's own address: one client


def flood(address: tuple[str, int], scenario: str, seconds: float, clients: int) -> dict:
    """(The flooding process.) Envelope codes of every answer, and how many."""
    codes: dict[str, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(n: int) -> None:
        rng = random.Random(n)
        conn = http.client.HTTPConnection(*address, timeout=30)
        while time.monotonic() < end:
            user = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10))
            headers = {}
            forwarded = flood_address(scenario, rng)
            if forwarded:
                headers["X-Forwarded-For"] = forwarded
            try:
                conn.request(
                    "GET",
                    f"/api/json/user/login/?auth_username={user};auth_password=guess{n}",
                    headers=headers,
                )
                code = json.loads(conn.getresponse().read())["responses"][0]["code"]
            except (OSError, http.client.HTTPException, ValueError):
                code = "error"
                conn.close()
                conn = http.client.HTTPConnection(*address, timeout=30)
            with lock:
                codes[code] = codes.get(code, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


class Site:
    """`pbxcontrol api` on a fresh SQLite database, behind a trusted proxy (loopback)."""

    def __init__(self, tmp: Path, python: str):
        self.tmp = tmp
        config = tmp / "pbxcontrol.ini"
        config.write_text(
            f"[database]\nurl = sqlite:///{tmp / 'pbx.db'}\n[http]\nhost = 127.0.0.1\n"
            "port = 0\nprocesses = 1\ntrusted_proxies = 127.0.0.1\n"
            "[plugins]\nenabled = active_calls\n"
        )
        config.chmod(0o600)
        people = [
            {"username": f"probe{i}", "password": f"probe{i}-pass", "customer": 1}
            for i in range(PROBES)
        ]
        tree = {
            "customers": [{"id": 1, "name": "Root", "parent": None}],
            "people": [dict(p, role="system owner") for p in people],
        }
        (tmp / "tree.json").write_text(json.dumps(tree))
        self.cli = [python, "-m", "pbxcontrol", "--config", str(config)]
        # cwd: the interpreter's own pbxcontrol (BENCH_PYTHON), not a ./pbxcontrol here.
        for args in (["initdb"], ["provision", str(tmp / "tree.json")]):
            subprocess.run([*self.cli, *args], check=True, capture_output=True, cwd=tmp)
        self.proc = subprocess.Popen([*self.cli, "api"], stderr=subprocess.PIPE, text=True, cwd=tmp)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            match = re.search(r"listening on http://([\d.]+):(\d+)/", line)
            if match:
                self.address = (match.group(1), int(match.group(2)))
                break
        else:
            raise RuntimeError("pbxcontrol api did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep it drained

    def status_kb(self, field: str) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def reset_peak(self) -> bool:
        """Reset the kernel's RSS high-water mark (VmHWM) of the service; False if not allowed."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def login(self, i: int, user: str, password: str, source: str) -> tuple[float, str]:
        """One login on a new connection: (seconds, envelope code)."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        try:
            conn.request(
                "GET",
                f"/api/json/user/login/?auth_username={user};auth_password={password}",
                headers={"X-Forwarded-For": source},
            )
            code = json.loads(conn.getresponse().read())["responses"][0]["code"]
        finally:
            conn.close()
        return time.perf_counter() - started, code

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def probe(site: Site, i: int, into: list[tuple[float, str]]) -> None:
    """A right login of person `i` from an address of its own, never seen before."""
    into.append(site.login(i, f"probe{i}", f"probe{i}-pass", f"198.51.100.{i}"))


def measure(scenario: str, quick: bool, python: str = sys.executable) -> dict:
    """One scenario on a fresh service: RSS before and at peak, the right logins' times."""
    seconds = 8 if quick else SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        site = Site(Path(tmp), python)
        try:
            # Warm up: the first password checks allocate argon2's memory once.
            for i in range(3):
                site.login(i, "nobody", "x", f"192.0.2.{i + 1}")
            time.sleep(0.5)
            before_kb = site.status_kb("VmRSS")
            hwm = site.reset_peak()
            samples = [before_kb]
            flooder = subprocess.Popen(
                [python, __file__, "--flood", json.dumps([site.address, scenario, seconds])],
                stdout=subprocess.PIPE,
                text=True,
            )
            started = time.monotonic()
            probes: list[tuple[float, str]] = []
            threads: list[threading.Thread] = []
            next_probe = started + 1.0  # once the flood is under way
            while flooder.poll() is None:
                samples.append(site.status_kb("VmRSS"))
                now = time.monotonic()
                if now >= next_probe and len(threads) < PROBES and now < started + seconds - 1:
                    # Each on a thread of its own: a slow one does not delay the next.
                    threads.append(
                        threading.Thread(target=probe, args=(site, len(threads), probes))
                    )
                    threads[-1].start()
                    next_probe = now + 0.5
                time.sleep(0.05)
            for thread in threads:
                thread.join(120)
            out, _ = flooder.communicate(timeout=60)
            peak_kb = max(max(samples), site.status_kb("VmHWM") if hwm else 0)
        finally:
            site.stop()
    codes = json.loads(out)
    times = [t for t, _ in probes]
    return {
        "scenario": scenario,
        "seconds": seconds,
        "clients": CLIENTS,
        "flood_codes": codes,
        "flood_per_second": sum(codes.values()) / seconds,
        "rss_before_mb": before_kb / 1024,
        "rss_peak_mb": peak_kb / 1024,
        "rss_growth_mb": (peak_kb - before_kb) / 1024,
        "right_logins": len(probes),
        "right_logins_ok": sum(code == "200" for _, code in probes),
        "right_login_codes": sorted({code for _, code in probes}),
        "right_login_p50_ms": common.median(times) * 1000 if times else 0.0,
        "right_login_max_ms": max(times, default=0.0) * 1000,
        "right_login_ms": [round(t * 1000) for t in times],  # as they finished
    }


def run(results: common.Results, quick: bool, scenarios=SCENARIOS) -> None:
    for scenario in scenarios:
        got = measure(scenario, quick)
        name = f"loginflood.{scenario}"
        target = scenario in TARGETS
        note = (
            f"{got['clients']} clients, {got['seconds']} s, flood answers {got['flood_codes']}, "
            f"RSS {got['rss_before_mb']:.0f} -> {got['rss_peak_mb']:.0f} MB"
        )
        growth = got["rss_growth_mb"]
        results.add(
            f"{name}.rss_growth",
            growth,
            "MB",
            target="<= 64" if target else "",
            met=common.check(growth, "<=", 64) if target else None,
            note=note,
        )
        worst = got["right_login_max_ms"]
        results.add(
            f"{name}.right_login_max",
            worst,
            "ms",
            target="<= 2000" if target else "",
            met=common.check(worst, "<=", 2000) if target else None,
            note=f"{got['right_logins']} logins, codes {got['right_login_codes']}",
        )
        results.add(f"{name}.right_login_p50", got["right_login_p50_ms"], "ms")
        ok = got["right_logins_ok"] / max(1, got["right_logins"])
        results.add(
            f"{name}.right_login_ok",
            ok,
            "fraction",
            target=">= 1" if target else "",
            met=common.check(ok, ">=", 1.0) if target else None,
        )
        results.add(f"{name}.flood_rate", got["flood_per_second"], "req/s")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--flood"]:
        address, scenario, seconds = json.loads(argv[1])
        print(json.dumps(flood(tuple(address), scenario, seconds, CLIENTS)))
        return 0
    quick = "--quick" in argv
    chosen = argv[argv.index("--scenario") + 1 :][:1] if "--scenario" in argv else SCENARIOS
    python = os.environ.get("BENCH_PYTHON", sys.executable)  # another tree's interpreter
    for scenario in chosen:
        print(json.dumps(measure(scenario, quick, python)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
