"""A big system view leaves in the kept order's blocks (envelope.Pieces): never copied whole
between the in-memory view and the socket (issue 21: each whole copy of a fresh half-MB
buffer cost more in page faults than the rest of the answer), and the client gets exactly
the bytes of one joined body, with its length, on both engines."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from pbxcontrol.plugin import Pieces
from pbxcontrol.service.server import listen, make_server
from plugins.active_calls.order import BLOCK
from tests.conftest import LIST
from tests.plugins.active_calls.conftest import leg
from tests.plugins.active_calls.stream_support import query, write_legs

LEGS = 3 * BLOCK  # several blocks
SYSTEM = query("admin", customer="system", names="1", sort="snumber")


@pytest.fixture
def busy(rt):
    write_legs(
        rt,
        1,
        upsert=[
            leg(f"{i}.1", f"{i}.1", 100 + i, scustomer=3, snumber=str(10_000 + i))
            for i in range(LEGS)
        ],
    )
    return rt


def test_the_system_view_goes_out_in_its_blocks_also_from_the_cache(busy):
    code, first = busy.api.respond("calls/active/list", "GET", SYSTEM, b"")
    assert code == 200 and isinstance(first, Pieces)
    assert max(len(part) for part in first.parts) < first.size / 2  # no whole copy
    body = json.loads(first.join())
    assert [row["snumber"] for row in body["data"]] == [str(10_000 + i) for i in range(LEGS)]
    assert first.join() == busy.api.dispatch("calls/active/list", "GET", SYSTEM, b"")[1]
    _, again = busy.api.respond("calls/active/list", "GET", SYSTEM, b"")  # the response cache
    assert isinstance(again, Pieces)
    assert all(a is b for a, b in zip(again.parts, first.parts, strict=True))


def test_over_http_the_pieces_arrive_as_one_body_with_its_length(busy):
    server = make_server(busy.app, listen("127.0.0.1", 0), threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        want = busy.api.dispatch("calls/active/list", "GET", SYSTEM, b"")[1]
        conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
        for _ in range(2):  # computed, then from the cache; one keep-alive connection
            conn.request("GET", f"{LIST}?{SYSTEM}")
            resp = conn.getresponse()
            assert resp.getheader("Content-Length") == str(len(want))
            assert resp.getheader("Transfer-Encoding") is None
            assert resp.read() == want
        conn.close()
    finally:
        server.close()
        thread.join(5)


def test_the_blocks_a_change_touched_are_joined_as_the_view_catches_up_off_the_request(busy):
    """The hub's catch-up (LegView.follow) joins again the blocks a change touched, for the
    kind of answer asked for since its last catch-up (with names here): the next answer after
    a change finds them joined and is right; the kind never asked for (without names) is left
    alone, and so is every kind at a catch-up with no answer since the last one."""
    view = busy.api.functions["calls/active/list"].handler.keywords["view"]
    busy.api.respond("calls/active/list", "GET", SYSTEM, b"")  # asked for: with names
    order = view.orders["snumber"]
    write_legs(busy, 1, gone=[leg("0.1", "0.1", 100, scustomer=3, snumber="10000")])
    new = leg("x.1", "x.1", 999, scustomer=3, snumber=str(10_000 + LEGS))
    write_legs(busy, 1, upsert=[new])
    with busy.engine.connect() as conn:  # what the stream hub does after a commit
        view.follow(conn)
    assert [text[0] is not None for text in order.texts] == [True] * len(order.texts)
    assert [text[1] for text in order.texts] == [None] * len(order.texts)
    kept = [text[0] for text in order.texts]
    code, answer = busy.api.respond("calls/active/list", "GET", SYSTEM, b"")
    assert code == 200 and isinstance(answer, Pieces)
    assert all(any(part is text for part in answer.parts) for text in kept)  # none joined again
    numbers = [row["snumber"] for row in json.loads(answer.join())["data"]]
    assert numbers == [str(10_000 + i) for i in range(1, LEGS + 1)]
    for uid in ("y.1", "z.1"):  # two catch-ups, no answer in between: the first joins
        write_legs(busy, 1, upsert=[leg(uid, uid, 998, scustomer=3, snumber="10001")])
        with busy.engine.connect() as conn:
            view.follow(conn)
    assert order.texts[0] == [None, None]
    _, body = busy.api.dispatch("calls/active/list", "GET", SYSTEM, b"")
    numbers = [row["snumber"] for row in json.loads(body)["data"]]
    assert numbers[:3] == ["10001"] * 3 and len(numbers) == LEGS + 2
