"""The lag part's bare websocket client (bench/load.py starts it), in a process of its own: the
baseline the API's lag is compared with, so that nothing else in the bench process (the
poller's requests and JSON) delays its reads.

Standalone (no project imports). Reads one JSON line from stdin — {"url": ..., "auth":
[user, password], "subscription": the application's subscription URL} —, connects (its own
ARI application, then subscribed to every channel and bridge), prints `ready`,
and on `stop` (stdin) prints one JSON line: {"created": {channel id: Asterisk's timestamp},
"destroyed": {...}, "delivery_ms": [...]} — for ChannelCreated and ChannelDestroyed, the
event's own timestamp, and the time from it to this client's receipt of the event.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime

import websocket


def main() -> None:
    order = json.loads(sys.stdin.readline())
    token = base64.b64encode(":".join(order["auth"]).encode()).decode()
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.connect(order["url"], header=[f"Authorization: Basic {token}"], timeout=5)
    query = urllib.parse.urlencode({"eventSource": "channel:,bridge:"})
    subscribe = urllib.request.Request(
        f"{order['subscription']}?{query}",
        method="POST",
        headers={"Authorization": f"Basic {token}"},
    )
    urllib.request.urlopen(subscribe, timeout=5).close()
    report: dict = {"created": {}, "destroyed": {}, "delivery_ms": []}
    stopping = threading.Event()
    reader = threading.Thread(target=_read, args=(ws, report, stopping), daemon=True)
    reader.start()
    print("ready", flush=True)
    sys.stdin.readline()  # "stop", or the bench went away
    stopping.set()
    reader.join(2)
    print(json.dumps(report), flush=True)
    ws.close()


def _read(ws: websocket.WebSocket, report: dict, stopping: threading.Event) -> None:
    ws.settimeout(0.5)
    while not stopping.is_set():
        try:
            message = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except (OSError, websocket.WebSocketException):
            return
        got = time.time()
        event = json.loads(message)
        kind = event.get("type")
        if kind not in ("ChannelCreated", "ChannelDestroyed"):
            continue
        stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
        target = report["created" if kind == "ChannelCreated" else "destroyed"]
        target[event["channel"]["id"]] = stamp
        report["delivery_ms"].append((got - stamp) * 1000)


if __name__ == "__main__":
    main()
