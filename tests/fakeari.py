"""FakeAri: the recorder's ARI interface, replaying event streams recorded from Asterisk 22.

It keeps the live channels implied by the events it has emitted, so GET /channels,
/asterisk/info and channel variables stay consistent with the replay at every moment.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

from pbxcontrol.ari.channel import LINKEDID_VAR, AsteriskInfo, Channel
from pbxcontrol.ari.client import AriError, asterisk_info, channel_list

RECORDINGS = Path(__file__).parent / "recordings"


def load_recording(name: str) -> list[dict[str, Any]]:
    """The lines of tests/recordings/NAME.jsonl: info, event, channels (labelled) records."""
    with (RECORDINGS / f"{name}.jsonl").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


class FakeStream:
    def __init__(self) -> None:
        self._messages: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False

    def deliver(self, message: str | None) -> None:
        self._messages.put(message)

    def recv(self, timeout: float) -> str | None:
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None:
            raise AriError("events websocket closed (fake)")
        return message

    def buffered(self) -> list[str]:
        return []  # one message per recv, as a slow trickle would give

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._messages.put(None)


class FakeAri:
    def __init__(
        self, startup_time: str = "2026-11-27T06:00:00.000+0000", *, channelvars: bool = True
    ):
        self.startup_time = startup_time
        self.channelvars = channelvars  # False: like an ari.conf without channelvars
        self.live: dict[str, dict[str, Any]] = {}
        self.reachable = True
        self.stream: FakeStream | None = None
        self.connected = threading.Event()
        self.rest_calls: list[str] = []
        self._lock = threading.Lock()

    # -- the Ari interface -------------------------------------------------------------
    def info(self) -> AsteriskInfo:
        self._rest("info")
        return asterisk_info(self.raw_info())  # parsed as AriClient does

    def channels(self) -> list[Channel]:
        self._rest("channels")
        return channel_list(self.raw_channels(), "fake")

    # -- what Asterisk answers, as JSON (tests replace these to send garbage) ----------
    def raw_info(self) -> Any:
        return {
            "status": {"startup_time": self.startup_time, "last_reload_time": self.startup_time}
        }

    def raw_channels(self) -> Any:
        with self._lock:
            return [self._public(c) for c in self.live.values()]

    def variable(self, channel_id: str, name: str) -> str | None:
        self._rest(f"variable {channel_id} {name}")
        with self._lock:
            channel = self.live.get(channel_id)
        if channel is None or name != LINKEDID_VAR:
            return None
        return (channel.get("channelvars") or {}).get(LINKEDID_VAR)

    def open_events(self) -> FakeStream:
        if not self.reachable:
            raise AriError("connection refused (fake)")
        self.stream = FakeStream()
        self.connected.set()
        return self.stream

    # -- driving it --------------------------------------------------------------------
    def emit(self, event: dict[str, Any], *, deliver: bool = True) -> None:
        """Asterisk does something: the channel table changes and (if connected and
        `deliver`) the event goes out on the websocket."""
        channel = event.get("channel")
        with self._lock:
            if isinstance(channel, dict) and "id" in channel:
                if event.get("type") == "ChannelDestroyed":
                    self.live.pop(channel["id"], None)
                elif event.get("type") not in ("ChannelLeftBridge",) or channel["id"] in self.live:
                    self.live[channel["id"]] = channel
            if event.get("type") == "Dial":
                for key in ("caller", "peer"):
                    ch = event.get(key)
                    if isinstance(ch, dict) and ch.get("id") in self.live:
                        self.live[ch["id"]] = ch
        if deliver:
            self.send_raw(json.dumps(event) if not isinstance(event, str) else event)

    def send_raw(self, message: str) -> None:
        if self.stream is not None and not self.stream.closed:
            self.stream.deliver(message)

    def drop(self) -> None:
        """The websocket goes away (network cut, ARI module reload)."""
        if self.stream is not None:
            self.stream.close()
        self.connected.clear()

    def restart(self, startup_time: str) -> None:
        """Asterisk restarts: every channel is gone, the startup time changes."""
        self.drop()
        with self._lock:
            self.live.clear()
        self.startup_time = startup_time

    def _public(self, channel: dict[str, Any]) -> dict[str, Any]:
        if self.channelvars:
            return channel
        return {k: v for k, v in channel.items() if k != "channelvars"}

    def _rest(self, what: str) -> None:
        if not self.reachable:
            raise AriError(f"{what}: connection refused (fake)")
        self.rest_calls.append(what)
