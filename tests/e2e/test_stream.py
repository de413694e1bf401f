"""The live stream against the sandbox Asterisk and real SIP calls (SPEC §8): a client that
applies the stream holds what calls/active/list returns for the same parameters within 1 s of
each change, and a client that was cut off resumes with the missed changes only."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from tests.e2e.support import USERS, ari_view, of, same
from tests.plugins.active_calls.stream_support import Client, query

pytestmark = pytest.mark.e2e

WITHIN = 1.0  # seconds a stream may differ from the list after a change (SPEC §8)
LIST = "/api/json/calls/active/list/"


class Watcher:
    """One SSE connection read on its own thread (a socket, as any client would): `view` is
    what it holds after the last event it applied, `kinds` the events it got."""

    view: dict[tuple[int, str], dict[str, Any]]
    count: int | None

    def __init__(self, port: int, q: str, last: Watcher | None = None) -> None:
        headers = {"Last-Event-ID": str(last.last_id)} if last else {}
        self.client = Client(("127.0.0.1", port), q, headers=headers)
        assert self.client.header("Content-Type") == "text/event-stream", self.client.head
        if last:  # a resuming client keeps what it held
            self.client.rows, self.client.count = dict(last.view), last.count
        self.view = dict(self.client.rows)
        self.count = self.client.count
        self.last_id: int | None = None
        self.kinds: list[str] = []
        self.error: BaseException | None = None
        self._cut = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._cut:
            try:
                got = self.client.read_event(1.0)
            except TimeoutError:
                continue
            except (OSError, EOFError, ValueError) as exc:
                if not self._cut:
                    self.error = exc
                return
            if got is not None:  # publish a copy: the test thread only reads these
                self.view, self.count = dict(self.client.rows), self.client.count
                self.last_id = got[0]
                self.kinds.append(got[1])

    def cut(self) -> None:
        """Drop the connection as a client that goes away does."""
        self._cut = True
        self.client.sock.shutdown(2)
        self.client.close()
        self.thread.join(5)


class View:
    """One (person, parameters): its stream and its list."""

    def __init__(self, port: int, user: str, **params: str) -> None:
        self.port, self.user, self.params = port, user, params
        self.q = query(user, **params)
        self.http = requests.Session()
        self.watcher = Watcher(port, self.q)
        self.differs_since: float | None = None
        self.lag = 0.0  # the longest time the stream differed from the list

    def listed(self) -> Any:
        url = f"http://127.0.0.1:{self.port}{LIST}"
        body = self.http.get(url, params={"auth_password": USERS[self.user], **self._query()})
        envelope = body.json()
        assert envelope["responses"][0]["code"] == "200", envelope
        data = envelope["data"]
        return data if isinstance(data, dict) else {(r["machine"], r["uniqueid"]): r for r in data}

    def _query(self) -> dict[str, str]:
        return {"auth_username": self.user, **self.params}

    def held(self) -> Any:
        watcher = self.watcher
        assert watcher.error is None, f"{self}: the stream broke: {watcher.error!r}"
        return {"count": watcher.count} if "count" in self.params else watcher.view

    def resume(self) -> None:
        self.watcher = Watcher(self.port, self.q, last=self.watcher)

    def __str__(self) -> str:
        return f"{self.user} {self.params}"


def diff(listed: Any, held: Any) -> str:
    if "count" in listed:
        return f"listed {listed}, streamed {held}"
    differ = {k: (listed[k], held[k]) for k in listed.keys() & held.keys() if listed[k] != held[k]}
    return (
        f"only listed {sorted(listed.keys() - held.keys())}; "
        f"only streamed {sorted(held.keys() - listed.keys())}; differ {differ}"
    )


class Board:
    """The views under test, compared with their lists (and the system view with Asterisk)
    every few tens of milliseconds while the calls move on."""

    def __init__(self, ari, views: list[View], system: View) -> None:
        self.ari, self.views, self.system = ari, views, system

    def wait(self, what: str, done=lambda chans: True, timeout: float = 20.0) -> None:
        """Until Asterisk's channels satisfy `done`, the system view equals them, and every
        stream equals its list; no stream may differ from its list for more than WITHIN."""
        deadline = time.monotonic() + timeout
        while True:
            chans = self.ari.channels()
            agree = all([self._compare(view) for view in self.views])
            system = self.system.listed()
            if (
                done(chans)
                and agree
                and same({u: r for (_, u), r in system.items()}, ari_view(self.ari))
            ):
                return
            assert time.monotonic() < deadline, (
                f"{what}: timed out; Asterisk {[(c['name'], c['state']) for c in chans]}"
            )
            time.sleep(0.03)

    def _compare(self, view: View) -> bool:
        listed, held = view.listed(), view.held()
        now = time.monotonic()
        if listed == held:
            if view.differs_since is not None:
                view.lag = max(view.lag, now - view.differs_since)
            view.differs_since = None
            return True
        view.differs_since = view.differs_since or now
        late = now - view.differs_since
        assert late <= WITHIN, f"{view}: stream != list for {late:.2f} s: {diff(listed, held)}"
        return False

    def report(self) -> str:
        return ", ".join(f"{v} {v.lag * 1000:.0f} ms" for v in self.views)


def up(*endpoints: str):
    return lambda ch: all(len(of(ch, e, "Up")) == 1 for e in endpoints)


def ringing(endpoint: str):
    return lambda ch: bool(of(ch, endpoint, "Ringing"))


def gone(ids: set[str]):
    return lambda ch: not ids & {c["id"] for c in ch}


def legs_of(chans, *endpoints: str) -> set[str]:
    return {c["id"] for e in endpoints for c in of(chans, e)}


def views_of(port: int) -> tuple[list[View], View]:
    system = View(port, "admin", customer="system", names="1")
    views = [
        system,
        View(port, "acme", names="1"),
        View(port, "reseller", customer="recursive", sort="snumber", descending="1"),
        View(port, "beta", direction="internal"),
        View(port, "acme", count="1"),
        View(port, "reseller", recursive="1", count="1"),
    ]
    return views, system


def test_streams_equal_the_list_through_real_calls(idle, pbx, sipp):
    ari = idle
    views, system = views_of(pbx.port)
    board = Board(ari, views, system)
    board.wait("the snapshots")
    # Trunk -> alice: ringing, then answered and bridged.
    sipp.phone_answers("alice", ring_ms=2000)
    sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    board.wait("alice ringing", ringing("PJSIP/alice"))
    board.wait("trunk and alice up", up("PJSIP/alice", "PJSIP/trunk1"))
    inbound = legs_of(ari.channels(), "PJSIP/alice", "PJSIP/trunk1")
    # Phone -> phone across tenants meanwhile: dave (Beta) calls bob (Acme).
    sipp.phone_answers("bob", ring_ms=1500, media_port=6110)
    sipp.phone_calls("dave", "1002")
    board.wait("bob ringing", ringing("PJSIP/bob"))
    board.wait("dave and bob up", up("PJSIP/dave", "PJSIP/bob"))
    internal = legs_of(ari.channels(), "PJSIP/dave", "PJSIP/bob")
    ari.hangup(min(inbound))
    board.wait("the inbound call gone", gone(inbound))
    ari.hangup(min(internal))
    board.wait("the internal call gone", gone(internal))
    assert all({"upsert", "remove"} <= set(v.watcher.kinds) for v in views[:3]), [
        v.watcher.kinds for v in views
    ]
    print("longest stream != list:", board.report())


def test_ring_group_through_local_channels_streams_as_listed(idle, pbx, sipp):
    ari = idle
    views, system = views_of(pbx.port)
    board = Board(ari, views, system)
    board.wait("the snapshots")
    sipp.phone_answers("alice", scenario="uas_ring.xml")
    sipp.phone_answers("bob", ring_ms=2000, media_port=6110)
    sipp.carrier_calls("0201113333", "0207946000", "Dentist")
    board.wait("both ringing", lambda ch: ringing("PJSIP/alice")(ch) and ringing("PJSIP/bob")(ch))
    board.wait(
        "bob up, alice's legs gone",
        lambda ch: up("PJSIP/bob")(ch) and not of(ch, "PJSIP/alice") and not of(ch, "Local/1001"),
    )
    legs = legs_of(ari.channels(), "PJSIP/trunk1", "PJSIP/bob", "Local/1002@ringgroup")
    ari.hangup(min(legs_of(ari.channels(), "PJSIP/trunk1")))
    board.wait("the call gone", gone(legs))
    print("longest stream != list:", board.report())


def test_a_cut_stream_resumes_with_the_missed_changes_only(idle, pbx, sipp):
    ari = idle
    views, system = views_of(pbx.port)
    board = Board(ari, views, system)
    board.wait("the snapshots")
    sipp.phone_answers("alice", ring_ms=8000)  # answers after the cut
    sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    sipp.phone_answers("carol", ring_ms=300, media_port=6120)
    sipp.phone_calls("bob", "2001")  # Acme -> Beta, up before the cut
    board.wait(
        "alice ringing, bob and carol up",
        lambda ch: ringing("PJSIP/alice")(ch) and up("PJSIP/bob", "PJSIP/carol")(ch),
    )
    cross = legs_of(ari.channels(), "PJSIP/bob", "PJSIP/carol")
    for view in views:
        view.watcher.cut()
    # While away: one call hangs up, a new one starts, the ringing one is answered.
    ari.hangup(min(cross))
    sipp.phone_answers("bob", ring_ms=300, media_port=6130)
    sipp.phone_calls("dave", "1002")
    board.views = []  # nothing streams now: wait for Asterisk and the list alone
    board.wait(
        "the changes while cut",
        lambda ch: gone(cross)(ch) and up("PJSIP/alice", "PJSIP/dave", "PJSIP/bob")(ch),
    )
    for view in views:
        view.resume()
    board.views = views
    board.wait("the resumed streams")
    for view in views:
        kinds = view.watcher.kinds
        assert kinds and "snapshot" not in kinds, f"{view}: {kinds}"  # the missed changes only
    assert {"upsert", "remove"} <= set(views[1].watcher.kinds), views[1].watcher.kinds
    everyone = legs_of(ari.channels(), "PJSIP/trunk1", "PJSIP/alice", "PJSIP/dave", "PJSIP/bob")
    for leg in legs_of(ari.channels(), "PJSIP/trunk1", "PJSIP/dave"):
        ari.hangup(leg)
    board.wait("every call gone", gone(everyone))
    print("longest stream != list:", board.report())
