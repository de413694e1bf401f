"""The kept order of the system view (order.py): blocks that split and empty as legs come and
go, each keeping its rows' JSON joined, always equal to the plain sorted list and its JSON."""

from __future__ import annotations

import json
import random

import pytest

from plugins.active_calls import order as order_mod
from plugins.active_calls.order import Order
from plugins.active_calls.view import Row, sort_key


def row(i: int, start: int) -> Row:
    values = (1, f"u{i}", start, *([""] * 13))
    obj = json.dumps({"uniqueid": f"u{i}", "start": start}, separators=(",", ":"))
    named = obj[:-1] + f',"snumber_name":"n{i}"}}'
    return Row(i, values, named.encode(), len(obj) - 1)


@pytest.mark.parametrize("seed", range(5))
def test_the_blocks_stay_the_sorted_list(monkeypatch, seed):
    """Random adds and removes, with blocks of 4 rows (so they split and empty often): the
    entries, their count and the joined JSON (with and without names) after every step are
    those of the sorted list of the rows held."""
    monkeypatch.setattr(order_mod, "BLOCK", 4)
    rnd = random.Random(seed)
    held: dict[int, Row] = {}
    kept = Order(sorted((*sort_key(r, "start"), r) for r in held.values()))
    for step in range(400):
        if held and rnd.random() < 0.45:
            gone = held.pop(rnd.choice(sorted(held)))
            kept.remove((*sort_key(gone, "start"), gone))
        else:
            new = row(step, rnd.randrange(30))  # many equal starts: the key's tie-breaks
            held[step] = new
            kept.add((*sort_key(new, "start"), new))
        if step % 7 == 0 or step > 390:
            expected = sorted(held.values(), key=lambda r: sort_key(r, "start"))
            assert [entry[-1] for entry in kept] == expected
            assert len(kept) == len(expected)
            for names in (True, False):
                want = [json.loads(r.named if names else r.plain()) for r in expected]
                assert json.loads(kept.joined(names)) == want
    assert max(len(block) for block in kept.blocks) <= 8


def test_removing_a_row_not_held_changes_nothing():
    a, b = row(1, 5), row(2, 6)
    kept = Order([(*sort_key(a, "start"), a)])
    kept.remove((*sort_key(b, "start"), b))
    assert [entry[-1] for entry in kept] == [a] and len(kept) == 1
    kept.remove((*sort_key(a, "start"), a))
    assert list(kept) == [] and kept.joined(True) == b"[]"
