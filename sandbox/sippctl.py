"""sipp parties and a small ARI client for the sandbox Asterisk (tests/e2e and scripts/demo.py).

Importable as ``sandbox.sippctl`` from the repository root. Every sipp process is started
with a Call-ID we choose (``-cid_str``) and a message trace, and is stopped by its pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
SIPP_DIR = HERE / "sipp"
SANDBOX_SCRIPT = HERE.parent / "scripts" / "asterisk-sandbox"

ARI_URL = os.environ.get("ARI_URL", "http://127.0.0.1:8088/ari").rstrip("/")
ARI_USER = os.environ.get("ARI_USER", "pbxcontrol")
ARI_PASS = os.environ.get("ARI_PASSWORD", "pbxcontrol-secret")
ASTERISK_SIP = "127.0.0.1:5060"

# The sandbox layout (sandbox/README.md): name -> (ip, number, display name, customer)
PHONES = {
    "alice": ("127.0.0.5", "1001", "Alice Smith", 3),
    "bob": ("127.0.0.6", "1002", "Bob Jones", 3),
    "carol": ("127.0.0.7", "2001", "Carol Meyer", 4),
    "dave": ("127.0.0.8", "2002", "Dave Keller", 4),
}
TRUNK_IP = "127.0.0.3"
UAC_PORT, UAS_PORT, TRUNK_UAS_PORT = 5070, 5080, 5090
# Machine 2: the sandbox's second Asterisk (`scripts/asterisk-sandbox --instance 2`,
# sandbox/asterisk2/), its own ports and parties on other loopback addresses
ARI2_URL = "http://127.0.0.1:8188/ari"
ASTERISK2_SIP = "127.0.0.1:5160"
PHONES2 = {
    "erin": ("127.0.0.15", "1011", "Erin Brook", 3),
    "frank": ("127.0.0.16", "1012", "Frank Hill", 3),
    "grace": ("127.0.0.17", "2011", "Grace Lund", 4),
}
TRUNK2_IP = "127.0.0.13"
# Channels of the sandbox's SIP parties and ring-group plumbing (never bench/ Local channels)
PARTY_CHANNEL = re.compile(
    r"^(PJSIP/(alice|bob|carol|dave|trunk1|erin|frank|grace|trunk2)-"
    r"|Local/\d+@(ringgroup|phones)-)"
)
_CALL_ID = re.compile(r"^Call-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Ari:
    """The few ARI REST calls the tests and the demo need."""

    def __init__(self, url: str = ARI_URL, user: str = ARI_USER, password: str = ARI_PASS):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.auth = (user, password)

    def get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(f"{self.url}{path}", params=params, timeout=5)
        resp.raise_for_status()
        return resp.json()

    def channels(self) -> list[dict[str, Any]]:
        return self.get("/channels")

    def info(self) -> dict[str, Any]:
        return self.get("/asterisk/info")

    def variable(self, channel_id: str, name: str) -> str | None:
        resp = self.http.get(
            f"{self.url}/channels/{channel_id}/variable", params={"variable": name}, timeout=5
        )
        return resp.json().get("value") if resp.status_code == 200 else None

    def originate(
        self, endpoint: str, context: str, extension: str, caller_id: str = ""
    ) -> dict[str, Any]:
        """POST /channels: call `endpoint`; when it answers, it runs context/extension."""
        resp = self.http.post(
            f"{self.url}/channels",
            timeout=5,
            params={
                "endpoint": endpoint,
                "context": context,
                "extension": extension,
                "priority": "1",
                "callerId": caller_id,
            },
        )
        resp.raise_for_status()
        return resp.json()

    def hangup(self, channel_id: str) -> None:
        self.http.delete(f"{self.url}/channels/{channel_id}", timeout=5)

    def answers(self) -> bool:
        try:
            self.info()
            return True
        except (requests.RequestException, ValueError):
            return False


@dataclass
class Party:
    """One sipp process: a phone or the carrier, calling (UAC) or answering (UAS)."""

    label: str
    ip: str
    proc: subprocess.Popen[bytes]
    messages: Path
    role: str = "uas"
    call_id: str = ""  # the Call-ID of a UAC's first call (we chose it)
    extra: dict[str, Any] = field(default_factory=dict)

    def call_ids(self) -> list[str]:
        """Every Call-ID seen in this party's message trace (a UAS: Asterisk's own)."""
        try:
            text = self.messages.read_text(errors="replace")
        except OSError:
            return []
        return list(dict.fromkeys(_CALL_ID.findall(text)))

    def running(self) -> bool:
        return self.proc.poll() is None


class SippPool:
    """The sipp processes of a test or of the demo; `stop()` ends each one by its pid.
    `machine=2`: the parties of the second sandbox Asterisk (PHONES2, TRUNK2_IP)."""

    def __init__(self, workdir: Path, tag: str = "e2e", machine: int = 1) -> None:
        if shutil.which("sipp") is None:
            raise RuntimeError(
                "sipp not found: apt-get install sip-tester "
                "(scripts/asterisk-sandbox build installs it)"
            )
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tag = re.sub(r"[^A-Za-z0-9.-]", "-", tag)
        self.parties: list[Party] = []
        self._n = 0
        self.asterisk_sip = ASTERISK_SIP if machine == 1 else ASTERISK2_SIP
        self.phones = PHONES if machine == 1 else PHONES2
        self.trunk_ip = TRUNK_IP if machine == 1 else TRUNK2_IP

    def _start(
        self, label: str, ip: str, args: list[str], *, calls: int = 1, timeout_s: int | None = 120
    ) -> Party:
        self._n += 1
        name = f"{self._n:02d}-{label}"
        messages = self.workdir / f"{name}.msg"
        cmd = [
            "sipp",
            *args,
            "-i",
            ip,
            "-m",
            str(calls),
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(messages),
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{name}.errors"),
        ]
        if timeout_s:
            cmd += ["-timeout", f"{timeout_s}s"]
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,
            )
        party = Party(label, ip, proc, messages)
        self.parties.append(party)
        return party

    def uas(
        self,
        label: str,
        ip: str,
        scenario: str = "uas_answer.xml",
        *,
        ring_ms: int = 1000,
        port: int = UAS_PORT,
        media_port: int = 6100,
        calls: int = 1,
        timeout_s: int | None = 120,
    ) -> Party:
        """Answer (after ringing `ring_ms`) the calls Asterisk sends to ip:port."""
        party = self._start(
            label,
            ip,
            [
                "-sf",
                str(SIPP_DIR / scenario),
                "-p",
                str(port),
                "-mp",
                str(media_port),
                "-d",
                str(ring_ms),
            ],
            calls=calls,
            timeout_s=timeout_s,
        )
        _wait_bound(party, ip, port)  # before the first INVITE arrives
        return party

    def uac(
        self,
        label: str,
        ip: str,
        number: str,
        cnum: str,
        cname: str,
        scenario: str = "uac_wait_bye.xml",
        *,
        talk_ms: int = 0,
        media_port: int = 6000,
        calls: int = 1,
        limit: int = 1,
        timeout_s: int | None = 120,
    ) -> Party:
        """Call `number` from ip:5070 with caller ID cnum/cname; Call-ID `<tag>-<n>@<ip>`."""
        cid = f"{self.tag}-{label}-{self._n + 1}"
        args = [
            "-sf",
            str(SIPP_DIR / scenario),
            "-p",
            str(UAC_PORT),
            "-mp",
            str(media_port),
            "-s",
            number,
            "-key",
            "cnum",
            cnum,
            "-key",
            "cname",
            cname,
            "-d",
            str(talk_ms),
            "-cid_str",
            f"{cid}-%u@%s",
            "-l",
            str(limit),
        ]
        party = self._start(label, ip, [*args, self.asterisk_sip], calls=calls, timeout_s=timeout_s)
        party.role, party.call_id = "uac", f"{cid}-1@{ip}"
        return party

    # -- the sandbox parties --
    def phone_answers(self, name: str, **kw: Any) -> Party:
        return self.uas(f"{name}-uas", self.phones[name][0], **kw)

    def phone_calls(self, name: str, number: str, **kw: Any) -> Party:
        ip, own, display, _ = self.phones[name]
        return self.uac(f"{name}-uac", ip, number, own, display, **kw)

    def carrier_answers(self, **kw: Any) -> Party:
        kw.setdefault("media_port", 6200)
        return self.uas("carrier-uas", self.trunk_ip, port=TRUNK_UAS_PORT, **kw)

    def carrier_calls(self, did: str, cnum: str, cname: str, **kw: Any) -> Party:
        kw.setdefault("media_port", 6300)
        return self.uac("carrier-uac", self.trunk_ip, did, cnum, cname, **kw)

    def stop(self, role: str | None = None) -> None:
        """Stop the parties (of one role: "uac" or "uas"), each by its pid.

        Hang their calls up through ARI *before* stopping a UAS: Asterisk retransmits an
        unanswered BYE for 32 s, and a stray BYE reaching the next sipp on that port counts
        as its one call (`-m 1`), so that sipp would then ignore the INVITE it is there for."""
        chosen = [p for p in self.parties if role is None or p.role == role]
        for party in chosen:
            if party.proc.poll() is None:
                party.proc.send_signal(signal.SIGTERM)
        for party in chosen:
            try:
                party.proc.wait(3)
            except subprocess.TimeoutExpired:
                party.proc.kill()
                party.proc.wait()
        self.parties = [p for p in self.parties if p not in chosen]

    def report(self) -> str:
        lines = []
        for p in self.parties:
            errors = self.workdir / f"{p.messages.stem}.errors"
            text = errors.read_text(errors="replace")[-800:] if errors.exists() else ""
            lines.append(f"sipp {p.label}: exit {p.proc.poll()} {text.strip()}")
        return "\n".join(lines)


def _wait_bound(party: Party, ip: str, port: int, timeout: float = 10.0) -> None:
    """Until sipp holds UDP ip:port (binding it ourselves then fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if party.proc.poll() is not None:
            raise RuntimeError(
                f"sipp {party.label} exited with {party.proc.returncode} "
                f"(see {party.messages.parent})"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((ip, port))
            except OSError:
                time.sleep(0.1)  # bound; give sipp a moment to enter its receive loop
                return
        time.sleep(0.05)
    raise RuntimeError(f"sipp {party.label} did not bind {ip}:{port} within {timeout} s")


def hang_up_parties(ari: Ari, timeout: float = 10.0) -> None:
    """End the channels of the sandbox parties (after their sipp processes were stopped,
    Asterisk would keep them until an RTP or session timeout)."""
    for chan in ari.channels():
        if PARTY_CHANNEL.match(chan["name"]):
            ari.hangup(chan["id"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        PARTY_CHANNEL.match(c["name"]) for c in ari.channels()
    ):
        time.sleep(0.1)


def sandbox(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run scripts/asterisk-sandbox with `args`, capturing its output."""
    return subprocess.run(
        [str(SANDBOX_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sandbox_running(instance: int = 1) -> bool:
    return sandbox("--instance", str(instance), "status").returncode == 0
