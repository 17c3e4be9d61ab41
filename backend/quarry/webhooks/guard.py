"""Where a webhook may point: never at the server's own network, unless the operator allows it.

A URL is checked when it is saved and again, by resolving its host, at every delivery — the
delivery then connects to the very address that was checked (not to a second lookup that a
DNS server could answer differently: "DNS rebinding"). Refused: loopback, private (RFC 1918,
unique-local IPv6), link-local (cloud metadata at 169.254.169.254), shared (100.64/10),
multicast, reserved and unspecified addresses — anything that is not globally routable.
`QUARRY_WEBHOOK_ALLOW_PRIVATE=true` turns the check off (a server whose receivers are on
its own network; the tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class UnsafeTarget(Exception):
    """The URL cannot be used; the message is a sentence for the user."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    #: The checked address to connect to (None: any, the check is off).
    address: str | None


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or UnsafeTarget saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"The webhook URL is not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("The webhook URL must start with https:// (or http://).")
    if not parts.hostname:
        raise UnsafeTarget("The webhook URL has no host name.")
    if parts.username or parts.password:
        raise UnsafeTarget("The webhook URL may not hold a user name or password.")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(url: str, allow_private: bool) -> Target:
    """Check `url` and pick the address a delivery connects to; UnsafeTarget if it may not."""
    scheme, host, port = parse_url(url)
    if allow_private:
        return Target(scheme, host, port, None)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeTarget(f"The webhook's host {host!r} could not be resolved.") from None
    addresses = [str(info[4][0]) for info in infos]
    refused = [a for a in addresses if not is_public(a)]
    if refused or not addresses:
        raise UnsafeTarget(
            f"The webhook's host {host!r} is a private, loopback or link-local address "
            f"({', '.join(sorted(set(refused)))}); this server does not call those "
            "(its operator may allow them with QUARRY_WEBHOOK_ALLOW_PRIVATE=true)."
        )
    return Target(scheme, host, port, addresses[0])
