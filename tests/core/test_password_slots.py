"""Password checks are rationed (SPEC §13): at most 2 argon2 checks at once per process, one
per client address (/64) with a few waiting; others wait at most 1 s, then code 503, which is
not a failed login."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from pbxcontrol.auth import authenticator as auth
from pbxcontrol.auth.slots import Busy, KdfSlots
from pbxcontrol.db.models import LoginFailure
from tests.conftest import LIST


class SlowChecks:
    """verify_password taking `seconds`, counting how many run at once."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, password: str, stored: str) -> bool:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return False


def at_once(calls) -> list:
    """Run `calls` on threads started together; their results (or exceptions) in order."""
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 (the result under test)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_two_slots_one_per_address_and_at_most_a_second_of_waiting():
    slots = KdfSlots(slots=2, wait=1.0, per_address_waiting=2)
    slow = SlowChecks(0.3)

    def check(address):
        def call():
            started = time.monotonic()
            with slots.held(address):
                slow("x", "y")
            return time.monotonic() - started

        return call

    # Six addresses at once: two run, the others wait their turn (0.3 s each pair).
    took = at_once([check(f"192.0.2.{i}") for i in range(6)])
    assert all(isinstance(t, float) for t in took), took
    assert slow.most == 2
    took.sort()
    # Two at once (one after the other would end the second at 0.6 s); the last after three turns.
    assert took[1] < 0.6 and took[-1] >= 0.85, took
    # Ten from one IPv6 /64: one runs, two wait, seven are refused at once.
    slow.most = 0
    outcomes = at_once([check(f"2001:db8::{i + 1}") for i in range(10)])
    refused = [o for o in outcomes if isinstance(o, Busy)]
    assert len(refused) == 7 and slow.most == 1
    # A check that cannot get a slot within the second is refused then.
    slow.seconds = 1.5
    outcomes = at_once([check(f"198.51.100.{i}") for i in range(3)])
    assert [isinstance(o, Busy) for o in outcomes].count(True) == 1


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_busy_process_answers_503_and_counts_no_failure(app, rt, monkeypatch):
    slow = SlowChecks(1.3)
    monkeypatch.setattr(auth, "verify_password", slow)

    def login(i):
        address = {"REMOTE_ADDR": f"203.0.113.{i}"}
        query = f"?auth_username=user{i};auth_password=guess"
        return lambda: app.get(LIST + query, extra_environ=address).json["responses"][0]

    answers = at_once([login(i) for i in range(3)])
    assert sorted(a["code"] for a in answers) == ["401", "401", "503"], answers
    busy = next(a for a in answers if a["code"] == "503")
    assert busy["message"] == auth.BUSY
    assert slow.most == 2
    with rt.engine.connect() as conn:  # two failures (three rows each), not three
        assert conn.execute(select(func.count()).select_from(LoginFailure)).scalar() == 6


def test_the_same_credentials_asked_at_once_are_checked_once():
    slots = KdfSlots(slots=2, wait=1.0, per_address_waiting=2)
    slow = SlowChecks(0.3)
    calls = at_once([lambda: slots.once(b"same", "192.0.2.1", lambda: slow("p", "h"))] * 8)
    assert calls == [False] * 8, calls  # every caller has the verdict, none Busy
    assert slow.most == 1
    # Other credentials from the same address still take their own turn, as before.
    calls = at_once(
        [
            lambda k=k: slots.once(k, "192.0.2.1", lambda: slow("p", "h"))
            for k in (b"a", b"b", b"c", b"d")
        ]
    )
    assert sum(isinstance(c, Busy) for c in calls) == 1, calls


def test_one_clients_many_connections_with_a_right_password_all_get_in_on_a_fresh_process(
    app, monkeypatch
):
    """12 connections of one client with the same right password, the process's first
    requests (nothing remembered): one password check, twelve answers — not three answers
    and nine 503s (the address's limit)."""
    checks = []

    def counted(password: str, stored: str) -> bool:
        checks.append(1)
        time.sleep(0.2)  # argon2id on a loaded machine: the others arrive meanwhile
        return real(password, stored)

    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", counted)
    query = "?auth_username=acme;auth_password=acme-pass"
    address = {"REMOTE_ADDR": "198.51.100.7"}
    answers = at_once(
        [lambda: app.get(LIST + query, extra_environ=address).json["responses"][0]] * 12
    )
    assert [a["code"] for a in answers] == ["200"] * 12, answers
    assert len(checks) == 1
