"""The destination address table (the full SSRF suite grows with the security work)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from service.delivery.netguard import AddressPolicy, BlockedAddress, GuardedResolver

STRICT = AddressPolicy(allow_private=False)


BLOCKED = [
        "0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.16.0.1",
        "192.0.0.8", "192.0.2.1", "192.168.1.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
        "224.0.0.1", "240.0.0.1", "255.255.255.255", "::", "::1", "fe80::1", "fc00::1",
        "ff02::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe",
        "2002:7f00:0001::",
]  # fmt: skip


@pytest.mark.parametrize("addr", BLOCKED)
def test_blocked(addr: str) -> None:
    assert not STRICT.permits(ipaddress.ip_address(addr))
    with pytest.raises(BlockedAddress):
        STRICT.check_literal(addr)


@pytest.mark.parametrize("addr", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_allowed(addr: str) -> None:
    assert STRICT.permits(ipaddress.ip_address(addr))
    STRICT.check_literal(addr)


def test_allow_private_and_allow_list() -> None:
    assert AddressPolicy(allow_private=True).permits(ipaddress.ip_address("127.0.0.1"))
    scoped = AddressPolicy(allow_private=False, allowed=[ipaddress.ip_network("10.20.0.0/16")])
    assert scoped.permits(ipaddress.ip_address("10.20.1.1"))
    assert not scoped.permits(ipaddress.ip_address("10.21.1.1"))


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/",
        "https://LOCALHOST:8443/x",
        "https://api.localhost/",
        "http://a.b.localhost./",
    ],
)
def test_loopback_names_are_refused_like_literals(url: str) -> None:
    with pytest.raises(BlockedAddress, match="loopback name"):
        AddressPolicy(allow_private=False, allow_http=True).check_url(url)
    # Permitted where loopback is: private targets allowed, or 127.0.0.0/8 on the allow list.
    AddressPolicy(allow_private=True, allow_http=True).check_url(url)
    loopback = [ipaddress.ip_network("127.0.0.0/8")]
    AddressPolicy(allow_private=False, allowed=loopback, allow_http=True).check_url(url)
    # A name that merely contains the word is an ordinary name, judged at resolution.
    AddressPolicy(allow_private=False, allow_http=True).check_url("https://localhost.example.com/")


async def test_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = GuardedResolver(STRICT)
    try:
        with pytest.raises(BlockedAddress, match="localhost"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


class ScriptedResolver(AbstractResolver):
    """Answers each lookup with the next list of addresses: a rebinding DNS server."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=addr, port=port, family=family, proto=0, flags=0)
            for addr in self.answers.pop(0)
        ]

    async def close(self) -> None:
        pass


async def test_every_answer_is_checked_so_rebinding_is_refused() -> None:
    resolver = GuardedResolver(STRICT, ScriptedResolver(["93.184.215.14"], ["127.0.0.1"]))
    first = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in first] == ["93.184.215.14"]  # what the connector connects to
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):
        await resolver.resolve("rebind.example", 443)


async def test_an_answer_with_any_blocked_address_is_refused_whole() -> None:
    resolver = GuardedResolver(STRICT, ScriptedResolver(["93.184.215.14", "169.254.169.254"]))
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254"):
        await resolver.resolve("mixed.example", 443)


@pytest.mark.parametrize("addr", BLOCKED)
async def test_blocked_as_a_resolved_name(addr: str) -> None:
    resolver = GuardedResolver(STRICT, ScriptedResolver([addr]))
    with pytest.raises(BlockedAddress):
        await resolver.resolve("customer.example", 443)
