"""The client's address behind trusted reverse proxies (`[http] trusted_proxies`).

Behind a proxy every connection comes from the proxy: the login throttle per address, the
hang-up audit and the access log would see one client. X-Forwarded-For is honoured only when
the connection comes from a trusted proxy; then the client is the right-most address in it
that is not a trusted proxy itself (each proxy appends the address it saw, so anything left
of the first untrusted hop was written by the client and proves nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """'10.0.0.1, 192.168.0.0/16, ::1' -> networks; ValueError names the first bad item."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(found)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def within(address: str, networks: Iterable[Network]) -> bool:
    """Whether the client `address` (an IPv4-mapped IPv6 address as its IPv4) is in one of
    `networks`; False for anything that is not an address."""
    parsed = _address(address)
    return parsed is not None and any(parsed in net for net in networks)


class ClientAddress:
    """Resolves a connection's client address from its peer and X-Forwarded-For."""

    def __init__(self, trusted: Iterable[Network]) -> None:
        self.trusted = tuple(trusted)

    def is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def resolve(self, peer: str, forwarded: str) -> str:
        """The client's address: `peer` unless `peer` is a trusted proxy and `forwarded` (the
        X-Forwarded-For value, comma-separated) names one."""
        nearest = _address(peer)
        if not forwarded or not self.is_trusted(nearest):
            return peer
        for item in reversed(forwarded.split(",")):
            hop = _address(item)
            if hop is None:  # garbage a trusted proxy passed on: stop at the last good hop
                break
            nearest = hop
            if not self.is_trusted(hop):
                break
        return str(nearest)

    def middleware(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """The WSGI app with REMOTE_ADDR resolved (the peer kept in `pbxcontrol.peer`), then
        every proxy header removed by waitress's own middleware, as waitress does itself with
        `clear_untrusted_proxy_headers` when no proxy is trusted: the app never sees them."""
        from waitress.proxy_headers import proxy_headers_middleware  # config imports this module

        cleared = proxy_headers_middleware(app, clear_untrusted=True)

        def resolved(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            peer = environ.get("REMOTE_ADDR", "")
            environ["pbxcontrol.peer"] = peer
            environ["REMOTE_ADDR"] = self.resolve(peer, environ.get("HTTP_X_FORWARDED_FOR", ""))
            return cleared(environ, start_response)

        return resolved
