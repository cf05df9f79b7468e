"""A TCP proxy that a test controls: the link between the service and its broker.

The broker advertises the proxy's port (`TansuBroker(advertised_port=...)`), so every
connection a Kafka client makes, the bootstrap one and those to the addresses that metadata
names, passes through here. The test can then:

- `cut()`       close every open connection, as a broker restart or a dropped link does;
- `refuse()`    reset every new connection at once (the link is down);
- `stall()`     keep connections open but move no byte either way (a partition: requests
                time out rather than fail);
- `delay(s)`    add `s` seconds to every chunk in each direction (a slow broker);
- `restore()`   undo all of these.

Connections made from the harness's own process (its producer of events, its lookup caller,
its admin client) are exempt by default: the fault is between the service and the broker,
while the rest of the platform goes on producing. A connection's owner is known from
`/proc`: the peer's socket is ours if one of this process's descriptors is bound to its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Final

# Bytes read per chunk: Kafka requests and fetch responses of the tests fit in a few chunks.
CHUNK: Final = 64 * 1024


def from_this_process(peer_port: int) -> bool:
    """Whether the loopback TCP socket with local port `peer_port` is one of this process's:
    each socket descriptor is asked its own address (a few dozen cheap calls, where reading
    the machine's whole socket table would cost milliseconds per connection)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:["):
                continue
            with socket.socket(fileno=os.dup(int(fd))) as sock:
                inet = sock.family in (socket.AF_INET, socket.AF_INET6)
                if inet and sock.getsockname()[1] == peer_port:
                    return True
    return False


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    exempt: bool
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        exempt_own_process: bool = True,
    ) -> None:
        self._upstream = (host, upstream_port)
        self._host = host
        self._requested_port = port
        self._exempt_own = exempt_own_process
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._latency = 0.0
        self.port = port
        # What the proxy saw: a scenario reports these next to what the service did.
        self.accepted = 0
        self.reset = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._requested_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut(everything=True)
        if self._server is not None:
            await self._server.wait_closed()

    # The controls.

    def cut(self, *, everything: bool = False) -> int:
        """Close every faultable connection (all of them with `everything`); how many."""
        links = [link for link in self._links if everything or not link.exempt]
        for link in links:
            link.abort()
            self._links.discard(link)
        return len(links)

    def refuse(self) -> None:
        self._refusing = True

    def stall(self) -> None:
        self._flowing.clear()

    def delay(self, seconds: float) -> None:
        self._latency = seconds

    def restore(self) -> None:
        self._refusing = False
        self._latency = 0.0
        self._flowing.set()

    def isolate(self) -> int:
        """The link is down: open connections cut, new ones refused."""
        self.refuse()
        return self.cut()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # The plumbing.

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        peer_port = writer.get_extra_info("peername")[1]
        exempt = self._exempt_own and from_this_process(peer_port)
        if self._refusing and not exempt:
            self.reset += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            _reset(writer)
            return
        link = _Link(writer, up_writer, exempt)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, exempt, link)),
            asyncio.create_task(self._pump(up_reader, writer, exempt, link)),
        ]

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exempt: bool,
        link: _Link,
    ) -> None:
        # Chunks wait in order for their due time, so latency delays a stream without
        # reordering it; a stall stops reading, so the sender's socket buffers fill.
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        forward = asyncio.create_task(self._forward(pending, writer))
        try:
            while True:
                if not exempt:
                    await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                delay = 0.0 if exempt else self._latency
                pending.put_nowait((time.monotonic() + delay, data))
            pending.put_nowait((0.0, b""))
            await forward
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            forward.cancel()
            link.abort()
            self._links.discard(link)

    async def _forward(
        self, pending: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await pending.get()
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a refused connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
