"""Call control from any process that serves HTTP: REST-only ARI clients, one per machine.

An API process (`pbxcontrol api` on a host of its own, or `serve`) reaches the Asterisk that
holds a leg directly, through the `[asterisk:N]` section of its own config: no websocket (the
recorder's app name stays the recorder's), no hop through the recorder process. A machine
without a section is not reachable from this host, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pbxcontrol.ari.client import AriClient, AriError
from pbxcontrol.config import MachineConfig

#: Seconds per request (connect, then read). A hangup answers in milliseconds; an unreachable
#: or hung Asterisk must not hold an API thread, nor keep an operator waiting.
TIMEOUT = 2.0


class ChannelsUnavailable(Exception):
    """The machine cannot be asked from here; the message is for the API caller."""


class Channels(Protocol):
    """What a plugin may do to live channels (through `PluginContext.channels`)."""

    def reachable(self, machine: int) -> bool:
        """Whether this process has that machine's ARI settings."""
        ...

    def hang_up(self, machine: int, uniqueid: str) -> bool:
        """Hang the channel up: True when Asterisk accepted it, False when it had already
        ended. Raises ChannelsUnavailable when Asterisk cannot be reached or refuses."""
        ...


class AriChannels:
    """Channels over ARI REST, one lazily used `AriClient` per configured machine."""

    def __init__(self, clients: dict[int, AriClient]):
        self._clients = clients

    @classmethod
    def from_config(cls, machines: Iterable[MachineConfig]) -> AriChannels:
        return cls(
            {
                m.id: AriClient(m.ari_url, m.username, m.password, m.app, timeout=TIMEOUT)
                for m in machines
            }
        )

    def reachable(self, machine: int) -> bool:
        return machine in self._clients

    def hang_up(self, machine: int, uniqueid: str) -> bool:
        client = self._clients.get(machine)
        if client is None:
            raise ChannelsUnavailable(f"machine {machine} is not reachable from this API host")
        try:
            return client.hang_up(uniqueid)
        except AriError as exc:
            raise ChannelsUnavailable(
                f"Asterisk on machine {machine} did not answer: {exc}"
            ) from None
