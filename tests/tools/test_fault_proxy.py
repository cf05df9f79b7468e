"""The fault proxy against a real echo server on loopback: each control does what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tools.faults.proxy import FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the proxy cut the link
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _proxy(echo_port: int, *, exempt_own_process: bool = False) -> FaultProxy:
    proxy = FaultProxy(echo_port, exempt_own_process=exempt_own_process)
    await proxy.start()
    return proxy


async def _round_trip(port: int, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(payload)
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    took = time.monotonic() - started
    writer.close()
    return data, took


async def test_bytes_pass_both_ways_unchanged(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    payload = bytes(range(256)) * 1000
    data, _ = await _round_trip(proxy.port, payload)
    assert data == payload
    await proxy.close()


async def test_cut_closes_open_connections_and_new_ones_work(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    assert proxy.cut() == 1
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the client sees the close
    writer.close()
    assert (await _round_trip(proxy.port))[0] == b"ping"
    await proxy.close()


async def test_refuse_resets_new_connections_until_restored(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    proxy.refuse()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    assert proxy.reset == 1
    proxy.restore()
    assert (await _round_trip(proxy.port))[0] == b"ping"
    await proxy.close()


async def test_stall_holds_bytes_until_restored(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.stall()
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.5)
    proxy.restore()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    writer.close()
    await proxy.close()


async def test_delay_adds_latency_each_way_without_reordering(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    proxy.delay(0.2)
    payload = b"".join(i.to_bytes(4, "big") for i in range(20_000))
    data, took = await _round_trip(proxy.port, payload)
    assert data == payload
    assert took >= 0.4  # 0.2 s out, 0.2 s back
    proxy.restore()
    _, fast = await _round_trip(proxy.port)
    assert fast < 0.2
    await proxy.close()


async def test_connections_from_this_process_are_exempt_when_asked(echo_port: int) -> None:
    proxy = await _proxy(echo_port, exempt_own_process=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.isolate()
    proxy.delay(1.0)
    assert proxy.cut() == 0
    started = time.monotonic()
    writer.write(b"ok")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
    assert time.monotonic() - started < 0.5
    assert (await _round_trip(proxy.port))[0] == b"ping"  # not refused either
    writer.close()
    await proxy.close()
