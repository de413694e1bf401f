#!/usr/bin/env python3
"""`make demo`: a real Asterisk, demo tenants, live SIP calls and the API, until Ctrl-C.

    make demo                                    # or: .venv/bin/python scripts/demo.py
    .venv/bin/python scripts/demo.py --port 8091
    .venv/bin/python scripts/demo.py --use-running   # an Asterisk already on 127.0.0.1:8088

Starts the sandbox Asterisk (scripts/asterisk-sandbox up) unless it already runs, writes a
demo config and SQLite database under var/demo/ (git-ignored), provisions
sandbox/provision.json (a reseller with two customers, phones, a trunk, directory names),
places three long calls with sipp (each restarted when it ends), runs `pbxcontrol serve` in
the foreground and prints the wallboard's address with a fresh token for each demo person,
and curl commands. Ctrl-C stops everything it started, by pid.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox.sippctl import (  # noqa: E402
    ARI_PASS,
    ARI_URL,
    ARI_USER,
    Ari,
    SippPool,
    hang_up_parties,
    sandbox,
    sandbox_running,
)

CALL_MS = 600_000  # each demo call lasts 10 minutes, then sipp places it again
FOREIGN_ASTERISK = f"""\
Something already answers on 127.0.0.1:8088 and it is not the sandbox Asterisk of this
project (scripts/asterisk-sandbox status says it is not running). The demo will not start
a second Asterisk next to it.

If it is an Asterisk you want to watch, point pbxcontrol at it instead. In your config
(etc/pbxcontrol.ini is the commented sample):

    [asterisk:1]
    ari_url = http://127.0.0.1:8088/ari
    ; a user of its ari.conf (see etc/asterisk/ari.conf)
    username = <that user>
    password = <that user's password>
    ; unique per connection
    app = pbxcontrol-1

(http.conf must enable the HTTP server; etc/asterisk/http.conf is a sample), then run
`pbxcontrol --config FILE initdb`, `... provision FILE.json` and `... serve`.

Or run the demo against it anyway (no demo calls are placed: they need the sandbox's
dialplan; ARI_URL, ARI_USER and ARI_PASSWORD select the ARI login, default
{ARI_USER}/{ARI_PASS}):

    .venv/bin/python scripts/demo.py --use-running

Or stop whatever holds port 8088 and run `make demo` again.
"""


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def something_on_8088() -> bool:
    try:
        requests.get("http://127.0.0.1:8088/", timeout=2)
    except requests.RequestException:
        return False
    return True


def pbx(config: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise SystemExit(f"demo: pbxcontrol {args[0]} failed: {done.stderr.strip()}")
    say(done.stdout.strip())


def write_config(var: Path, port: int) -> Path:
    config = var / "pbxcontrol.ini"
    config.write_text(
        textwrap.dedent(f"""\
        ; written by scripts/demo.py
        [database]
        url = sqlite:///{var / "pbxcontrol.db"}
        [http]
        host = 127.0.0.1
        port = {port}
        [logging]
        level = INFO
        [plugins]
        enabled = active_calls
        [asterisk:1]
        ari_url = {ARI_URL}
        username = {ARI_USER}
        password = {ARI_PASS}
        app = pbxcontrol-demo-{os.getpid()}
        """)
    )
    config.chmod(0o600)
    return config


def start_calls(sipp: SippPool) -> None:
    """Three long calls; `-m`/`-l 1` make each sipp place its call again when it ends."""
    forever = {"calls": 100_000, "timeout_s": None}
    sipp.phone_answers("alice", scenario="uas_hold.xml", ring_ms=2000, **forever)
    sipp.phone_answers("carol", scenario="uas_hold.xml", ring_ms=3000, **forever)
    sipp.carrier_answers(scenario="uas_hold.xml", ring_ms=1500, **forever)
    # inbound: the carrier calls Acme's DID 0201112222 -> alice
    sipp.carrier_calls(
        "0201112222", "0207946000", "Dentist", scenario="uac.xml", talk_ms=CALL_MS, **forever
    )
    # internal, across tenants: bob (Acme) -> 2001 carol (Beta)
    sipp.phone_calls("bob", "2001", scenario="uac.xml", talk_ms=CALL_MS, media_port=6010, **forever)
    # outbound: dave (Beta) -> 0207946000 through the trunk
    sipp.phone_calls(
        "dave", "0207946000", scenario="uac.xml", talk_ms=CALL_MS, media_port=6020, **forever
    )


def curl_commands(port: int) -> str:
    base = f"http://127.0.0.1:{port}/api/json/calls/active/list/"
    return textwrap.dedent(f"""\
        Live calls from a real Asterisk. Paste any of these (| python3 -m json.tool to indent):

          # Acme Ltd's calls (the seed request)
          curl '{base}?auth_username=acme;auth_password=acme-pass'
          # the reseller: both customers, recursively
          curl '{base}?auth_username=reseller;auth_password=reseller-pass;customer=recursive'
          # the system owner: every leg on the machine, with number names
          curl '{base}?auth_username=admin;auth_password=admin-pass;customer=system;names=1'
          # how many legs Beta GmbH has
          curl '{base}?auth_username=beta;auth_password=beta-pass;count=1'
          # what Asterisk itself reports, to compare
          curl -u {ARI_USER}:{ARI_PASS} {ARI_URL}/channels

        Calls: carrier -> 0201112222 (alice, Acme), bob (Acme) -> carol (Beta),
        dave (Beta) -> 0207946000 (out through the trunk); each lasts 10 minutes and is
        placed again when it ends. Ctrl-C stops everything the demo started.
        """)


DEMO_PEOPLE = {
    "admin": ("admin-pass", "the system owner: every leg"),
    "reseller": ("reseller-pass", "Reseller A: Acme and Beta"),
    "acme": ("acme-pass", "Acme Ltd"),
    "beta": ("beta-pass", "Beta GmbH"),
}


def wallboard_urls(port: int) -> str:
    """The wallboard, already logged in, for each demo person: a read-only token from
    user/login in the URL's fragment (never sent to the server; the page takes it out of the
    address bar and renews it before it expires)."""
    base = f"http://127.0.0.1:{port}"
    lines = ["The wallboard, live in a browser (each link logs in as that person):", ""]
    for user, (password, what) in DEMO_PEOPLE.items():
        answer = requests.post(
            f"{base}/api/json/user/login/",
            data={"auth_username": user, "auth_password": password, "token": "1", "scope": "read"},
            timeout=10,
        ).json()
        if answer["responses"][0]["code"] != "200":
            raise SystemExit(f"demo: user/login as {user} failed: {answer['responses']}")
        lines += [
            f"  # {user}: {what}",
            f"  {base}/wallboard/#auth_token={answer['data']['auth_token']}",
        ]
    lines += ["", f"  # or log in with a username and password: {base}/wallboard/", ""]
    return "\n".join(lines)


def wait_api(port: int, serve: subprocess.Popen, timeout: float = 30.0) -> None:
    url = (
        f"http://127.0.0.1:{port}/api/json/calls/active/list/"
        "?auth_username=admin;auth_password=admin-pass;count=1"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise SystemExit(f"demo: pbxcontrol serve exited with {serve.returncode}")
        try:
            if requests.get(url, timeout=2).json()["responses"][0]["code"] == "200":
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: the API did not answer on port {port} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090, help="HTTP port of the API (8090)")
    parser.add_argument(
        "--var",
        type=Path,
        default=REPO / "var" / "demo",
        help="directory for the demo config, database and sipp logs",
    )
    parser.add_argument(
        "--use-running",
        action="store_true",
        help="use an Asterisk that already answers on 127.0.0.1:8088",
    )
    args = parser.parse_args(argv)
    os.umask(0o077)  # its config holds the ARI password; the database, password hashes

    # Ctrl-C and SIGTERM both end the demo through the same clean-up.
    def stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if not port_free(args.port):
        say(f"port {args.port} on 127.0.0.1 is in use; choose another with --port")
        return 2
    ours = sandbox_running()
    foreign = not ours and something_on_8088()
    if foreign and not args.use_running:
        print(FOREIGN_ASTERISK, file=sys.stderr)
        return 2

    started_sandbox = False
    sipp: SippPool | None = None
    serve: subprocess.Popen | None = None
    status = 0
    try:
        if not ours and not foreign:
            say("starting the sandbox Asterisk (the first time builds it: a few minutes) ...")
            up = sandbox("up", timeout=1800)
            if up.returncode != 0:
                print(up.stderr, file=sys.stderr)
                say("scripts/asterisk-sandbox up failed (above); see sandbox/README.md")
                return 1
            started_sandbox = True
        say(f"Asterisk answers at {ARI_URL}" + (" (not the sandbox)" if foreign else ""))
        args.var.mkdir(parents=True, exist_ok=True)
        for old in args.var.glob("pbxcontrol.db*"):
            old.unlink()  # a fresh demo database each run
        config = write_config(args.var, args.port)
        pbx(config, "initdb")
        pbx(config, "provision", str(REPO / "sandbox" / "provision.json"))
        if not foreign:
            sipp = SippPool(args.var / "sipp", tag="demo")
            start_calls(sipp)
            say("three demo calls placed with sipp")
        serve = subprocess.Popen(
            [sys.executable, "-m", "pbxcontrol", "--config", str(config), "serve"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_api(args.port, serve)
        print("\n" + wallboard_urls(args.port), flush=True)
        print(curl_commands(args.port), flush=True)
        status = serve.wait()
        say(f"pbxcontrol serve exited with {status}")
    except KeyboardInterrupt:
        print(flush=True)
        say("stopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                status = serve.wait(20)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
            say(f"pbxcontrol serve stopped (exit {status})")
        if sipp is not None:
            sipp.stop("uac")  # no more new calls
            hang_up_parties(Ari())  # while the answering sipps still take Asterisk's BYEs
            sipp.stop()
            say("sipp calls stopped")
        if started_sandbox:
            sandbox("down")
            say("sandbox Asterisk stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
