"""Which destination addresses a delivery may connect to.

An explicit table of special-purpose ranges (RFC 6890 and friends) rather than
`ipaddress.is_private`, whose meaning has changed between Python releases. IPv6 forms that
embed an IPv4 address are judged by the embedded address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this" network
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
        "::/128",  # unspecified
        "::1/128",  # loopback
        "fe80::/10",  # link-local
        "fc00::/7",  # unique local
        "ff00::/8",  # multicast
        "2001:db8::/32",  # documentation
    )
)

# A host made only of inet_aton-style numbers: "2130706433", "0x7f000001", "0177.0.0.1",
# "127.1". Resolvers turn these into addresses that a reader of the URL would not see.
_NUMERIC_PART: Final = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)

_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_6TO4: Final = ipaddress.ip_network("2002::/16")


_LOOPBACK: Final = ipaddress.ip_address("127.0.0.1")


class BlockedAddress(Exception):
    """The destination is on a network deliveries may not reach."""


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    return None


class AddressPolicy:
    """Decides whether a destination is reachable.

    `allow_private` turns the address table off; `allowed` networks pass despite it;
    `allow_http` admits plain-http URLs (https only otherwise).
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        allowed: Iterable[IPNetwork] = (),
        allow_http: bool = False,
    ) -> None:
        self.allow_private = allow_private
        self.allowed = tuple(allowed)
        self.allow_http = allow_http

    def check_url(self, url: str) -> None:
        """Raise BlockedAddress for a URL this policy refuses whatever DNS says."""
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.allow_http:
            raise BlockedAddress("plain http is not allowed; use https")
        self.check_literal(parts.hostname or "")

    def permits(self, addr: IPAddress) -> bool:
        if self.allow_private:
            return True
        if isinstance(addr, ipaddress.IPv6Address):
            inner = embedded_ipv4(addr)
            if inner is not None:
                return self.permits(inner)
        if any(addr in net for net in self.allowed if net.version == addr.version):
            return True
        return not any(addr in net for net in BLOCKED_NETWORKS if net.version == addr.version)

    def check_literal(self, host: str) -> None:
        """Raise BlockedAddress when `host` is an IP literal this policy refuses.

        aiohttp connects to IP literals without asking the resolver, so they are checked here.
        """
        host = host.strip("[]").rstrip(".")
        lowered = host.lower()
        if lowered == "localhost" or lowered.endswith(".localhost"):
            # Loopback by definition (RFC 6761): judged as the loopback address without asking
            # a resolver, so a customer learns at once, and an egress proxy never resolves it.
            if not self.permits(_LOOPBACK):
                raise BlockedAddress(f"{host!r} is a loopback name (RFC 6761)")
            return
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            if all(_NUMERIC_PART.fullmatch(part) for part in host.split(".")):
                raise BlockedAddress(f"{host!r} is an ambiguous IPv4 spelling") from None
            return
        if not self.permits(addr):
            raise BlockedAddress(f"{addr} is on a blocked network")


class GuardedResolver(AbstractResolver):
    """Resolves names and refuses the whole answer if any address is blocked.

    The connector connects to exactly the addresses returned here, so what was checked is
    what gets connected to; there is no second lookup a rebinding DNS server could answer
    differently.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        inner: AbstractResolver | None = None,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()
        # Hosts the operator configured (an egress proxy), not ones a customer typed.
        self._exempt = exempt

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host in self._exempt:
            return results
        for result in results:
            if not self._policy.permits(ipaddress.ip_address(result["host"])):
                raise BlockedAddress(f"{host} resolves to {result['host']}, a blocked network")
        return results

    async def close(self) -> None:
        await self._inner.close()
