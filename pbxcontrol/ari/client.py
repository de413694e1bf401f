"""A thin, typed ARI client: REST with requests, the events websocket with websocket-client."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import websocket

from pbxcontrol.ari.channel import (
    AsteriskInfo,
    Channel,
    MalformedEvent,
    parse_channels,
    parse_info,
)
from pbxcontrol.ari.frames import OPCODE_CLOSE, OPCODE_PING, OPCODE_TEXT, FrameBuffer, FrameError

READ_SIZE = 256 * 1024
#: What `subscribe_all` subscribes an application to: all channels, all bridges.
SUBSCRIPTION = "channel:,bridge:"


class AriError(Exception):
    """ARI is unreachable or answered something unusable. Never carries credentials."""


class EventStream(Protocol):
    def recv(self, timeout: float) -> str | None:
        """The next text message, None after `timeout` seconds of silence; raises AriError
        when the connection is gone."""

    def buffered(self) -> list[str]:
        """The messages already read off the connection and not yet returned (no waiting):
        a reader takes them with the one `recv` gave, and checks its lease once for all."""

    def close(self) -> None: ...


class Ari(Protocol):
    """What the recorder needs from Asterisk; AriClient and the tests' FakeAri provide it."""

    def info(self) -> AsteriskInfo: ...

    def channels(self) -> list[Channel]:
        """Every channel; malformed ones are logged and skipped."""
        ...

    def variable(self, channel_id: str, name: str) -> str | None: ...

    def open_events(self) -> EventStream: ...


class AriClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        *,
        subscribe_all: bool = True,
        timeout: float = 5.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 10.0,
        max_message: int = 16 * 1024 * 1024,
    ):
        self.base_url = base_url.rstrip("/")
        self.max_message = max_message  # bytes; a larger websocket message closes it
        self.app = app
        self.subscribe_all = subscribe_all
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._auth = (username, password)
        self._http = requests.Session()
        self._http.auth = self._auth

    def _get(self, path: str, **params: str) -> Any:
        try:
            resp = self._http.get(self.base_url + path, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise AriError(f"GET {path}: {type(exc).__name__}") from None
        if resp.status_code == 404 and "/variable" in path:
            # Asterisk 22 answers 404 for a variable that is not set (as well as for a
            # channel that is gone): both mean "no value", not a failure.
            return None
        if resp.status_code != 200:
            raise AriError(f"GET {path}: HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise AriError(f"GET {path}: answer is not JSON") from None

    def info(self) -> AsteriskInfo:
        return asterisk_info(self._get("/asterisk/info"))

    def channels(self) -> list[Channel]:
        return channel_list(self._get("/channels"), f"app {self.app}")

    def variable(self, channel_id: str, name: str) -> str | None:
        result = self._get(f"/channels/{quote(channel_id, safe='')}/variable", variable=name)
        return result.get("value") if isinstance(result, dict) else None

    def hang_up(self, channel_id: str) -> bool:
        """DELETE /channels/{id}: True once Asterisk accepted the hangup, False if the
        channel is already gone (404); AriError when Asterisk cannot be reached or refuses."""
        path = f"/channels/{quote(channel_id, safe='')}"
        try:
            resp = self._http.delete(self.base_url + path, timeout=self.timeout)
        except requests.RequestException as exc:
            raise AriError(f"DELETE /channels: {type(exc).__name__}") from None
        if resp.status_code == 404:
            return False
        if resp.status_code not in (200, 204):
            raise AriError(f"DELETE /channels: HTTP {resp.status_code}")
        return True

    def originate(self, endpoint: str, variables: dict[str, str], **params: str) -> None:
        """POST /channels: `endpoint` dialled, `params` as ARI names them (`context`,
        `extension`, `app`, `channelId`, `otherChannelId`, `timeout`, ...), `variables` set on
        the new channel before the call. AriError unless Asterisk accepted it."""
        query = {"endpoint": endpoint, **params}
        try:
            resp = self._http.post(
                self.base_url + "/channels",
                params=query,
                json={"variables": variables},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise AriError(f"POST /channels: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise AriError(f"POST /channels: HTTP {resp.status_code}")

    def call(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        """Any ARI REST request (the call-control executors' snoops, recordings and
        variables): (HTTP status, the JSON answer or None). AriError only when Asterisk cannot
        be reached: the status is the executor's to judge."""
        try:
            resp = self._http.request(
                method, self.base_url + path, params=params, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise AriError(f"{method} {path.split('/')[1]}: {type(exc).__name__}") from None
        try:
            return resp.status_code, resp.json() if resp.content else None
        except ValueError:
            return resp.status_code, None

    def events_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = f"app={quote(self.app)}"
        return urlunsplit((scheme, parts.netloc, parts.path + "/events", query, ""))

    def open_events(self) -> WebsocketStream:
        """The events websocket, subscribed (with `subscribe_all`) to every channel and bridge
        before it is returned: what the reconcile that follows reads is already covered."""
        ws = websocket.WebSocket(skip_utf8_validation=True)  # json decoding still checks it
        try:
            ws.connect(
                self.events_url(), timeout=self.timeout, header=[_basic_auth_header(*self._auth)]
            )
        except (OSError, websocket.WebSocketException) as exc:
            ws.close()
            raise AriError(f"events websocket: {_describe(exc)}") from None
        try:
            if self.subscribe_all:
                self._subscribe_everything()
        except AriError:
            ws.close()
            raise
        return WebsocketStream(ws, self.ping_interval, self.ping_timeout, self.max_message)

    def _subscribe_everything(self) -> None:
        """Every channel and bridge, not `subscribeAll=true`: that also subscribes the
        application to device states, and Asterisk (at least to 22.10) can deadlock when such
        a websocket closes while a device state is being delivered to it: its teardown waits
        for the delivery under the session's lock, the delivery waits for that lock, and from
        then on no application can connect (asterisk/asterisk issue 2170). The recorder reads
        no device states."""
        path = f"/applications/{quote(self.app, safe='')}/subscription"
        status, _ = self.call("POST", path, eventSource=SUBSCRIPTION)
        if status != 200:
            why = " (is the ARI user read_only?)" if status == 403 else ""
            raise AriError(f"POST /applications/…/subscription: HTTP {status}{why}")


class WebsocketStream:
    """Reads text frames; pings when idle and declares the link dead when nothing comes back.

    websocket-client opens the connection and sends; the frames are read here, straight off
    its socket, many per read (pbxcontrol.ari.frames says why)."""

    def __init__(
        self,
        ws: websocket.WebSocket,
        ping_interval: float,
        ping_timeout: float,
        max_message: int = 16 * 1024 * 1024,
    ):
        self._ws = ws
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._last_rx = time.monotonic()
        self._last_ping = 0.0
        self._frames = FrameBuffer(max_message)
        self._messages: deque[str] = deque()
        self._closed = False  # Asterisk sent a close frame: the messages before it come first

    def buffered(self) -> list[str]:
        messages = list(self._messages)
        self._messages.clear()
        return messages

    def recv(self, timeout: float) -> str | None:
        if self._messages:
            return self._messages.popleft()
        deadline = time.monotonic() + timeout
        while not self._closed:
            if self._frames.refused is not None:  # after the messages before it
                raise AriError(f"events websocket: {self._frames.refused}")
            now = time.monotonic()
            if now - self._last_rx > self._ping_timeout:
                raise AriError(f"no answer to ping for {self._ping_timeout:.0f} s")
            if (
                now - self._last_rx >= self._ping_interval
                and now - self._last_ping >= self._ping_interval
            ):
                self._send_ping()
            wait = min(deadline - now, self._ping_interval / 2)
            if wait <= 0:
                return None
            if self._read(wait):
                return self._messages.popleft()
        raise AriError("events websocket closed by Asterisk")

    def _read(self, wait: float) -> bool:
        """One read of the socket (at most `wait` seconds); True when it completed messages."""
        sock = self._ws.sock
        if sock is None:
            raise AriError("events websocket: closed")
        try:
            sock.settimeout(wait)
            chunk = sock.recv(READ_SIZE)
        except TimeoutError:
            return False
        except OSError as exc:
            raise AriError(f"events websocket: {_describe(exc)}") from None
        if not chunk:
            raise AriError("events websocket: connection closed by Asterisk")
        self._last_rx = time.monotonic()
        try:
            frames = self._frames.feed(chunk)
        except FrameError as exc:
            raise AriError(f"events websocket: {exc}") from None
        for opcode, payload in frames:
            if opcode == OPCODE_TEXT:
                self._messages.append(payload.decode("utf-8", "surrogateescape"))
            elif opcode == OPCODE_PING:
                self._answer(self._ws.pong, payload)
            elif opcode == OPCODE_CLOSE:
                self._answer(self._ws.send_close)
                self._closed = True
                break
        return bool(self._messages)

    def _answer(self, send: Callable[..., None], *args: bytes) -> None:
        try:
            send(*args)
        except (OSError, websocket.WebSocketException) as exc:
            raise AriError(f"events websocket: {_describe(exc)}") from None

    def _send_ping(self) -> None:
        self._last_ping = time.monotonic()
        self._answer(self._ws.ping)

    def close(self) -> None:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self._ws.close(timeout=1)


# An answer of the wrong shape is an AriError, like an unreachable ARI: the caller retries.
def asterisk_info(answer: Any) -> AsteriskInfo:
    try:
        return parse_info(answer)
    except MalformedEvent as exc:
        raise AriError(str(exc)) from None


def channel_list(answer: Any, source: str) -> list[Channel]:
    try:
        return parse_channels(answer, source)
    except MalformedEvent as exc:
        raise AriError(str(exc)) from None


def _basic_auth_header(username: str, password: str) -> str:
    import base64

    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Authorization: Basic {token}"


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
