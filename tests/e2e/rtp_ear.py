"""What a sandbox phone hears: the RTP Asterisk sends to one phone's media address, read off the
loopback interface (a packet socket: the e2e tier runs as root, sipp keeps no received audio),
decoded from G.711 mu-law, and how loud one tone frequency is in it (Goertzel). Used to check
who hears whom in calls/monitor's listen, whisper and barge: each party sends its own tone."""

from __future__ import annotations

import math
import socket
import struct
import threading
import time

ETH_P_ALL = 0x0003


def tone(frequency: float, seconds: float = 1.0) -> bytes:
    """A sine at `frequency` as 8 kHz mu-law (G.711 PCMU), raw."""
    out = bytearray()
    for n in range(int(8000 * seconds)):
        out.append(linear_to_ulaw(int(8000 * math.sin(2 * math.pi * frequency * n / 8000))))
    return bytes(out)


def linear_to_ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 132
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_to_linear(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + 132) << exponent
    return -(magnitude - 132) if sign else magnitude - 132


QUIET = bytes([0xFF]) * 8000  # mu-law silence: one second


def level(payload: bytes, frequency: float) -> float:
    """The tone's amplitude in `payload` (mu-law), relative to full scale: ~0.24 for one of
    our tones alone, ~0 when it is absent."""
    samples = [ulaw_to_linear(b) for b in payload]
    if not samples:
        return 0.0
    k = 2 * math.cos(2 * math.pi * frequency / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(samples) / 32768


class Ear:
    """Collects, for `seconds`, the RTP payloads sent to ip:port on the loopback interface."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = socket.inet_aton(ip), port
        self.payloads: list[bytes] = []

    def listen(self, seconds: float) -> bytes:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    frame, address = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                if address[2] == socket.PACKET_OUTGOING:
                    continue  # loopback shows each packet twice: take the incoming copy
                self._take(frame[14:])  # the loopback's Ethernet header
        finally:
            sock.close()
        return b"".join(self.payloads)

    def _take(self, packet: bytes) -> None:
        if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
            return
        header = (packet[0] & 0x0F) * 4
        if packet[16:20] != self.ip:
            return
        _, port, _, _ = struct.unpack("!HHHH", packet[header : header + 8])
        rtp = packet[header + 8 :]
        if port == self.port and len(rtp) > 12 and rtp[1] & 0x7F == 0:  # PCMU
            self.payloads.append(rtp[12 + 4 * (rtp[0] & 0x0F) :])


def hear_all(ears: dict[str, Ear], seconds: float) -> dict[str, bytes]:
    """Every ear at once, for the same `seconds`."""
    heard: dict[str, bytes] = {}
    threads = [
        threading.Thread(target=lambda n=name, e=ear: heard.__setitem__(n, e.listen(seconds)))
        for name, ear in ears.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 5)
    return heard


def loudness(payload: bytes) -> float:
    """RMS of `payload` (mu-law) relative to full scale: 0 for silence."""
    samples = [ulaw_to_linear(b) for b in payload]
    if not samples:
        return 0.0
    return math.sqrt(sum(x * x for x in samples) / len(samples)) / 32768
