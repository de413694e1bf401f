"""A fake Asterisk for the recording executors (recorder/recording.py): snoops, live
recordings and channel variables as ARI answers them, with the mechanics seen on the sandbox
Asterisk 22 (FACTS.md): a new snoop's /record answers 409 until it is in Stasis, a missing
recording directory is a 500, a snoop stays up after its recording stops, and any other command
on a snoop that records (a variable, a play) waits until the recording ends: Asterisk runs a
Stasis channel's commands one at a time and the recording is one, so the ARI client times out."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote

from pbxcontrol.ari.client import AriError


class RecordAri:
    app = "pbxcontrol"

    def __init__(self, live: set[str], not_ready: int = 1, directory: bool = True):
        self.live = set(live)  # the legs' uniqueids
        self.snoops: dict[str, str] = {}  # snoop id -> target
        self.recordings: dict[str, dict[str, str]] = {}  # name -> {state, snoop}
        self.variables: dict[tuple[str, str], str] = {}
        self.not_ready, self.directory = not_ready, directory
        self.asked: list[tuple[str, str]] = []
        self.created = 0  # recordings started (a duplicate would show here)
        self.lock = threading.Lock()

    def call(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        with self.lock:
            self.asked.append((method, path))
            parts = [unquote(p) for p in path.strip("/").split("/")]
            return self._answer(method, parts, params)

    def _answer(self, method: str, parts: list[str], params: dict[str, str]) -> tuple[int, Any]:
        match method, parts:
            case "POST", ["channels", target, "snoop"]:
                if target not in self.live:
                    return 404, {"message": "Channel not found"}
                self.snoops[params["snoopId"]] = target
                return 200, {"id": params["snoopId"], "name": f"Snoop/{target}-00000001"}
            case "POST", ["channels", snoop, "record"]:
                if snoop not in self.snoops:
                    return 404, None
                if self.not_ready > 0:  # not yet in Stasis
                    self.not_ready -= 1
                    return 409, {"message": "Channel not in Stasis application"}
                if not self.directory:
                    return 500, {"message": "Unrecognized recording error"}
                if params["name"] in self.recordings:
                    return 422, None
                self.recordings[params["name"]] = {"state": "recording", "snoop": snoop}
                self.created += 1
                return 201, {"name": params["name"], "state": "queued"}
            case "POST", ["channels", snoop, "variable"]:
                if any(rec["snoop"] == snoop for rec in self.recordings.values()):
                    raise AriError("POST channels: ReadTimeout")  # queued behind the recording
                self.variables[(snoop, params["variable"])] = params["value"]
                return 204, None
            case (("GET" | "DELETE"), ["channels", channel]):
                found = channel in self.snoops or channel in self.live
                if method == "DELETE":
                    self.end(channel)
                return (200 if found else 404), None
            case "GET", ["recordings", "live", name]:
                found = self.recordings.get(name)
                return (200, {"name": name, **found}) if found else (404, None)
            case _, ["recordings", "live", name, verb]:
                if name not in self.recordings:
                    return 404, None
                if verb == "stop":
                    del self.recordings[name]
                else:
                    self.recordings[name]["state"] = "paused" if method == "POST" else "recording"
                return 204, None
        raise AssertionError(f"unexpected ARI call {method} {parts}")

    def end(self, channel: str) -> None:
        """A channel hangs up: its snoops end, and their recordings finish."""
        self.live.discard(channel)
        for snoop, target in list(self.snoops.items()):
            if channel in (snoop, target):
                del self.snoops[snoop]
                for name, rec in list(self.recordings.items()):
                    if rec["snoop"] == snoop:
                        del self.recordings[name]

    def hang_up(self, channel: str) -> bool:
        with self.lock:
            found = channel in self.live
            self.end(channel)
            return found
