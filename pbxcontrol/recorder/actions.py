"""What the holder of a machine's lease does for each call-control intent (SPEC §11.2): one
executor per function, given the machine's control client (ARI REST) and the claimed intent,
returning the outcome (state, code, message, legs, created) the API answers from."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from pbxcontrol.ari.client import AriError
from pbxcontrol.db.intents import DONE, REFUSED, Claimed
from pbxcontrol.recorder.make import make

#: (state, code, message, legs [[machine, uniqueid, what became of it]], ids created)
Result = tuple[str, int, str, list[list[Any]], dict[str, Any]]


class ControlAri(Protocol):
    """The ARI REST calls the executors make (AriClient provides them)."""

    app: str  # the application snoops enter (recorder/recording.py)

    def call(self, method: str, path: str, **params: str) -> tuple[int, Any]: ...

    def hang_up(self, channel_id: str) -> bool: ...

    def originate(self, endpoint: str, variables: dict[str, str], **params: str) -> None: ...

    def variable(self, channel_id: str, name: str) -> str | None: ...


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


#: How long the holder waits for ChannelRedirect's status on the helper channel, and how often
#: it looks (the answer is due 2 s after the request arrived).
REDIRECT_WAIT, REDIRECT_POLL = 1.2, 0.02
NOT_FOUND = "Call does not exist, or you do not have permission to view it"


def redirect(ari: ControlAri, intent: Claimed) -> Result:
    """calls/redirect (SPEC §11.3): a helper Local channel into [pbxcontrol-actions]
    (etc/asterisk/extensions_pbxcontrol.conf) whose second half runs ChannelRedirect on the
    target — ARI's own /redirect answers 409 outside Stasis — and keeps its status for us."""
    target, p = intent.targets[0], intent.params
    helper, half = f"pbxc-{intent.id}-a", f"pbxc-{intent.id}-b"
    variables = {
        "PBXC_TARGET": target,
        "PBXC_CONTEXT": p["context"],
        "PBXC_CTYPE": p.get("ctype", ""),
        "PBXC_CNUMBER": p["cnumber"],
    }
    legs: list[list[Any]] = [[intent.machine, target, "not tried"]]
    try:
        status = channel_redirect(ari, intent.id, "redirect", variables)
    except AriError as exc:
        return REFUSED, 503, f"Asterisk on machine {intent.machine} refused: {exc}", legs, {}
    created = {"helper": [helper, half]}
    if status == "SUCCESS":
        return DONE, 204, "", [[intent.machine, target, "redirected"]], created
    if status == "NOCHANNEL":
        return REFUSED, 404, NOT_FOUND, [[intent.machine, target, "gone"]], created
    message = f"Asterisk on machine {intent.machine} did not confirm the redirect ({status!r})"
    return REFUSED, 503, message, legs, created


def channel_redirect(
    ari: ControlAri, intent: int, extension: str, variables: dict[str, str]
) -> str:
    """The helper Local `<extension>@pbxcontrol-actions` (ids pbxc-<intent>-a/-b), whose
    second half runs ChannelRedirect; its CHANNELREDIRECT_STATUS ("" if none came in time).
    AriError when Asterisk refuses the originate."""
    helper, half = f"pbxc-{intent}-a", f"pbxc-{intent}-b"
    try:
        ari.originate(
            f"Local/{extension}@pbxcontrol-actions",
            variables,
            context="pbxcontrol-actions",
            extension="done",
            channelId=helper,
            otherChannelId=half,
            timeout="5",
        )
        return _redirect_status(ari, half)
    finally:
        _quietly_hang_up(ari, helper)


def _redirect_status(ari: ControlAri, half: str) -> str:
    deadline = time.monotonic() + REDIRECT_WAIT
    while True:
        status = ari.variable(half, "PBXC_STATUS")
        if status or time.monotonic() >= deadline:
            return status or ""
        time.sleep(REDIRECT_POLL)


def _quietly_hang_up(ari: ControlAri, channel: str) -> None:
    """The helper's end: it would end by itself within 5 s (Wait(5), the dial timeout)."""
    with contextlib.suppress(AriError):
        ari.hang_up(channel)


EXECUTORS: dict[str, Callable[[ControlAri, Claimed], Result]] = {
    "hangup": hang_up,
    "redirect": redirect,
    "make": make,
}  # and "monitor": recorder/monitor.py, which keeps session rows (recorder/intents.py)


def execute(ari: ControlAri, intent: Claimed) -> Result:
    executor = EXECUTORS.get(intent.function)
    if executor is None:  # written by a newer API version than this recorder
        return REFUSED, 503, f"this recording process cannot do {intent.function!r}", [], {}
    return executor(ari, intent)
