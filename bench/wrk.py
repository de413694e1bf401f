"""wrk (Debian package `wrk`): run it, count envelopes whose code is not the expected one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Enswitch answers HTTP 200 whatever happened; the outcome is the envelope's code, so wrk's own
# non-2xx count is not enough: each thread counts bodies without the expected code.
SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) expected = '"code":"' .. args[1] .. '"'; bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, expected, 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("BAD_ENVELOPES %d\\n", total))
  for _, p in ipairs({50, 90, 99}) do
    io.write(string.format("PERCENTILE %d %d\\n", p, latency:percentile(p)))
  end
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            check=False,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is missing: apt-get install wrk (Debian package)")
    return found


def run_wrk(
    url: str, seconds: int, expected_code: str, connections: int = 32, threads: int = 2
) -> dict:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "envelope.lua"
        script.write_text(SCRIPT)
        out = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "5s",
                "-s",
                str(script),
                url,
                "--",
                expected_code,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    return parse(out)


def parse(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    pct = {int(p): int(us) / 1000 for p, us in re.findall(r"PERCENTILE (\d+) (\d+)", out)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(map(int, sock.groups())) if sock else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(re.search(r"BAD_ENVELOPES (\d+)", out).group(1))
    errors = socket_errors + bad  # a non-2xx answer is also a bad envelope
    detail = (
        f"{total} requests; socket errors {sock.group(0) if sock else 'none'}; "
        f"non-2xx {non2xx.group(1) if non2xx else 0}; unexpected envelopes {bad}"
    )
    return {
        "rps": rps,
        "requests": total,
        "p50_ms": pct[50],
        "p90_ms": pct[90],
        "p99_ms": pct[99],
        "errors": errors,
        "error_detail": detail,
    }
