"""The events websocket's subscription never wedges the real Asterisk.

With `subscribeAll=true` Asterisk also subscribes the application to device states, and closing
such a websocket while a device state is being delivered to it deadlocks Asterisk's ARI (the
teardown waits for the delivery under the session's lock, the delivery waits for that lock):
from then on no application can open an events websocket, while REST still answers. A recorder
reconnecting during traffic (a network drop, a failover) did that to the sandbox Asterisk in CI,
and the same run here wedged it after 3 connections. The recorder subscribes to every channel
and bridge instead (pbxcontrol.ari.client)."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from pbxcontrol.ari.client import AriClient, AriError
from sandbox.sippctl import ARI_PASS, ARI_URL, ARI_USER, sandbox

pytestmark = pytest.mark.e2e

DEVICES = [f"Stasis:pbxcontrol-e2e-churn{i}" for i in range(5)]


def _churn(stop: threading.Event) -> None:
    """Device states changing as fast as ARI takes them (real calls change them too)."""
    http = requests.Session()
    http.auth = (ARI_USER, ARI_PASS)
    i = 0
    while not stop.is_set():
        i += 1
        state = "INUSE" if i % 2 else "NOT_INUSE"
        http.put(f"{ARI_URL}/deviceStates/{DEVICES[i % 5]}", params={"deviceState": state})


def _client(n: int) -> AriClient:
    return AriClient(ARI_URL, ARI_USER, ARI_PASS, f"pbxcontrol-e2e-sub{n % 3}", timeout=5.0)


def test_closing_events_websockets_while_device_states_change_never_wedges_asterisk(asterisk):
    stop = threading.Event()
    churners = [threading.Thread(target=_churn, args=(stop,), daemon=True) for _ in range(3)]
    for thread in churners:
        thread.start()
    opened, wedged, began = 0, None, time.monotonic()
    try:
        while time.monotonic() - began < 10 and opened < 200:
            try:
                stream = _client(opened).open_events()
            except AriError as exc:
                wedged = exc
                break
            opened += 1
            time.sleep(0.02)  # device states reach the application before it closes
            stream.close()
    finally:
        stop.set()
        for thread in churners:
            thread.join(10)
        if wedged is not None:  # the rest of the tier needs an Asterisk that accepts them
            sandbox("down")
            sandbox("up")
        for device in DEVICES:
            requests.delete(f"{ARI_URL}/deviceStates/{device}", auth=(ARI_USER, ARI_PASS))
    assert wedged is None, (
        f"Asterisk stopped opening events websockets after {opened} connections "
        f"({time.monotonic() - began:.1f} s): {wedged} (restarted it for the tests after this)"
    )
    assert opened >= 60, f"only {opened} connections in 10 s: too few to show anything"
