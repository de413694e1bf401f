"""What the holder of a machine's lease does for each call-control intent (SPEC §11.2): one
executor per function, given the machine's control client (ARI REST) and the claimed intent,
returning the outcome (state, code, message, legs, created) the API answers from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pbxcontrol.ari.client import AriError
from pbxcontrol.db.intents import DONE, REFUSED, Claimed

#: (state, code, message, legs [[machine, uniqueid, what became of it]], ids created)
Result = tuple[str, int, str, list[list[Any]], dict[str, Any]]


class ControlAri(Protocol):
    """The ARI REST calls the executors make (AriClient provides them)."""

    def hang_up(self, channel_id: str) -> bool: ...


def hang_up(ari: ControlAri, intent: Claimed) -> Result:
    """calls/hangup: every target leg; a leg that ended meanwhile is not an error (SPEC §9).
    A failure of Asterisk stops there (the legs after it are not tried)."""
    legs: list[list[Any]] = []
    for uniqueid in intent.targets:
        try:
            gone = not ari.hang_up(uniqueid)
        except AriError as exc:
            legs.append([intent.machine, uniqueid, "failed"])
            legs += [[intent.machine, u, "not tried"] for u in intent.targets[len(legs) :]]
            message = f"Asterisk on machine {intent.machine} did not answer: {exc}"
            return REFUSED, 503, message, legs, {}
        legs.append([intent.machine, uniqueid, "already ended" if gone else "hung up"])
    return DONE, 204, "", legs, {}


EXECUTORS: dict[str, Callable[[ControlAri, Claimed], Result]] = {"hangup": hang_up}


def execute(ari: ControlAri, intent: Claimed) -> Result:
    executor = EXECUTORS.get(intent.function)
    if executor is None:  # written by a newer API version than this recorder
        return REFUSED, 503, f"this recording process cannot do {intent.function!r}", [], {}
    return executor(ari, intent)
