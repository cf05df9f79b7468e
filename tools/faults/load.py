"""What a fault scenario drives the service with, and what it counts at the far end.

- `EventStream` produces events at a steady rate and remembers when each was sent.
- `Endpoints` is one aiohttp server with a path per receiver; each path counts what it got
  by event id and answers `{"accepted": true}`, and can be put in a failing mode: `hang`
  (accept, never answer), `trickle` (that answer a byte at a time, slower than the
  timeout), `fail` (503), `close` (answer, then close the connection, so that every
  delivery connects and resolves anew).
- `LookupCaller` makes pre-call lookups the way the platform does (docs/events.md) and
  waits for each reply, noting its status, or that none came.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.catalog.entries import BY_TYPE
from service.lookups.protocol import CORRELATION_HEADER, REPLY_TOPIC_HEADER
from tools.receiver import wait_until
from tools.voice_events import cloud_event

MODES: Final = ("ok", "hang", "trickle", "fail", "close")
# Every endpoint answers this: a subscription may require it (a success condition).
ANSWER: Final = b'{"accepted": true}'
# A trickling answer sends one byte this often: longer than a short timeout in total.
TRICKLE_EVERY: Final = 0.25


@dataclass
class Endpoint:
    """One receiver: deliveries by event id, and when each event first arrived."""

    mode: str = "ok"
    seen: Counter[str] = field(default_factory=Counter)
    answered: dict[str, float] = field(default_factory=dict)
    # Answer each request only after this many seconds (a slow endpoint).
    delay: float = 0.0
    # Fail this fraction of requests with 503 (a flaky endpoint), drawn per request.
    flaky: float = 0.0

    # Requests for an event this endpoint had already answered with success, by event id:
    # what its deduplication on webhook-id absorbs. (Attempts it never answered, a hang or a
    # trickle, are retries, not duplicates: they are in `seen`.)
    repeats: Counter[str] = field(default_factory=Counter)

    @property
    def duplicates(self) -> int:
        return self.repeats.total()

    def duplicates_of(self, events: Iterable[str]) -> int:
        """Duplicates of these events only (a scenario's own, on an endpoint that outlives it)."""
        return sum(self.repeats[e] for e in events)


class Endpoints:
    def __init__(self, seed: int = 5) -> None:
        self.paths: dict[str, Endpoint] = {}
        self._rng = random.Random(seed)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def add(self, name: str, **options: float) -> Endpoint:
        path = Endpoint(**options)  # type: ignore[arg-type]
        self.paths[name] = path
        return path

    async def start(self, host: str = "127.0.0.1") -> None:
        app = web.Application()
        app.router.add_route("*", "/{name}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = self.paths[request.match_info["name"]]
        body = await request.read()
        try:
            event_id = str(orjson.loads(body).get("id", ""))
        except orjson.JSONDecodeError:
            event_id = ""
        path.seen[event_id] += 1
        if event_id in path.answered:
            path.repeats[event_id] += 1
        if path.delay:
            await asyncio.sleep(path.delay)
        mode = path.mode
        if mode == "hang":
            await asyncio.Event().wait()  # until the client gives up and the server closes
        if mode == "fail" or (path.flaky and self._rng.random() < path.flaky):
            return web.Response(status=503)
        if mode == "trickle":
            return await _trickle(request)
        path.answered.setdefault(event_id, time.monotonic())
        if body.startswith(b'{"number"'):  # a lookup's template: the caller's context
            return web.json_response({"name": "Jane Doe", "vip": True})
        response = web.Response(body=ANSWER, content_type="application/json")
        if mode == "close":
            response.force_close()
        return response


async def _trickle(request: web.Request) -> web.StreamResponse:
    """The answer a byte at a time; the client gives up first (its timeout), which ends
    this handler with a connection error, as it ends a real server's write."""
    response = web.StreamResponse(status=200, headers={
        "Content-Length": str(len(ANSWER)), "Content-Type": "application/json"})  # fmt: skip
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for byte in ANSWER:
            await response.write(bytes([byte]))
            await asyncio.sleep(TRICKLE_EVERY)
        await response.write_eof()
    return response


class EventStream:
    """Events at `rate` per second, round robin over the topic's partitions."""

    def __init__(self, bootstrap: str, topic: str, rate: float, *, types: list[str]) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._rate = rate
        self._types = types
        self.sent: dict[str, float] = {}  # event id -> when its send was acknowledged
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def _acknowledged(self, event_id: str, future: asyncio.Future[object]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.sent[event_id] = time.monotonic()

    async def _run(self) -> None:
        rng = random.Random(11)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        started = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set():
                event_id = f"evt_{uuid.uuid4().hex}"
                value = cloud_event(self._types[n % len(self._types)], "acme", rng, event_id)
                future = await producer.send(self._topic, value)
                future.add_done_callback(functools.partial(self._acknowledged, event_id))
                n += 1
                await asyncio.sleep(max(0.0, started + n / self._rate - time.monotonic()))
            await producer.flush()
        finally:
            await producer.stop()


@dataclass
class Lookups:
    """What became of the lookups made: replies by status, and those never answered."""

    sent: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    # No reply while the caller waited; of those, `late` got one afterwards (a rebalance
    # held the request longer than the caller waits), the rest none at all.
    unanswered: int = 0
    late: int = 0
    slowest_ms: float = 0.0

    @property
    def missing(self) -> int:
        """Requests that never got a reply: lost."""
        return self.unanswered - self.late


class LookupCaller:
    """One lookup every `every` seconds, each waiting up to `wait` seconds for its reply."""

    def __init__(
        self, bootstrap: str, topic: str, replies: str, *, every: float, wait: float = 10
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._replies = replies
        self._every = every
        self._wait = wait
        self.result = Lookups()
        self._waiting: dict[str, tuple[float, asyncio.Future[str]]] = {}
        self._given_up: set[str] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self._replies, bootstrap_servers=self._bootstrap, group_id=None,
            auto_offset_reset="latest", fetch_max_wait_ms=50,
        )  # fmt: skip
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, enable_idempotence=False, linger_ms=0
        )
        await self._consumer.start()
        await self._consumer.seek_to_end()
        await self._producer.start()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._call())]

    async def stop(self, late_within: float = 30) -> Lookups:
        """Stops calling, waits out the calls under way and, for a while, the replies to
        those given up on; says what became of them."""
        self._stop.set()
        await self._tasks[1]
        await wait_until(lambda: not self._given_up, late_within, 0.1)
        self._tasks[0].cancel()
        await asyncio.gather(self._tasks[0], return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()
        return self.result

    async def _call(self) -> None:
        calls: list[asyncio.Task[None]] = []
        while not self._stop.is_set():
            calls.append(asyncio.create_task(self._one()))
            await asyncio.sleep(self._every)
        await asyncio.gather(*calls)

    async def _one(self) -> None:
        correlation = uuid.uuid4().hex
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        self._waiting[correlation] = (started, reply)
        value = orjson.dumps({
            "specversion": "1.0", "id": f"evt_lookup_{correlation}", "source": "/voice/call",
            "type": "call.inbound", "tenantid": "acme", "data": BY_TYPE["call.inbound"].sample,
        })  # fmt: skip
        await self._producer.send_and_wait(self._topic, value, headers=[
            (REPLY_TOPIC_HEADER, self._replies.encode()),
            (CORRELATION_HEADER, correlation.encode()),
        ])  # fmt: skip
        self.result.sent += 1
        try:
            status = await asyncio.wait_for(reply, self._wait)
            self.result.replies[status] += 1
            took = (time.monotonic() - started) * 1000
            self.result.slowest_ms = max(self.result.slowest_ms, took)
        except TimeoutError:
            self.result.unanswered += 1
            self._given_up.add(correlation)
        finally:
            self._waiting.pop(correlation, None)

    async def _read(self) -> None:
        while True:
            record = await self._consumer.getone()
            correlation = (record.key or b"").decode()
            waiting = self._waiting.get(correlation)
            # A second reply to one request (a rebalance replays it) is not a second answer.
            if waiting is not None and not waiting[1].done():
                waiting[1].set_result(orjson.loads(record.value)["status"])
            elif correlation in self._given_up:
                self._given_up.discard(correlation)
                self.result.late += 1
