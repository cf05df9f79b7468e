"""A delivery pool on real loopback servers, and what became of each job, for the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from service.delivery.circuit import CircuitSettings
from service.delivery.followup import FinishOnly
from service.delivery.job import DeliveryJob, Ending
from service.delivery.netguard import AddressPolicy
from service.delivery.outcomes import AttemptResult
from service.delivery.pool import DeliveryPool, FindSubscription
from service.delivery.sender import Sender
from service.events.envelope import Event
from service.subscriptions.model import Subscription, SubscriptionCreate, new_subscription

StartServer = Callable[[web.Application], Awaitable[str]]


def make_event(event_id: str = "evt_1") -> Event:
    return Event(
        id=event_id,
        source="/voice/call",
        type="call.ended",
        tenant_id="acme",
        time="2026-11-22T10:00:00Z",
        time_unix=time.time(),
        data_raw=b'{"call":{"duration":125}}',
    )


def make_sub(url: str, **fields: Any) -> Subscription:
    req = msgspec.convert(
        {"tenant_id": "acme", "name": "t", "url": url, "event_types": ["*"], **fields},
        SubscriptionCreate,
    )
    return new_subscription(req, AddressPolicy(allow_private=True, allow_http=True))


class RecordingFollowup(FinishOnly):
    """Finishes every job, noting what the pool asked for: the Kafka side is tested elsewhere."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.results: dict[str, AttemptResult] = {}

    def attempted(self, job: DeliveryJob, result: AttemptResult, transition: Any) -> None:
        self.calls.append(("attempted", job.event.id, transition))
        self.results[job.event.id] = result
        job.finish(Ending.DELIVERED if result.ok else Ending.RETRYING)

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        self.calls.append(("give_up", job.event.id, reason))
        job.finish(Ending.DEAD_LETTERED)


class Harness:
    """A pool and its sender, with a followup that records what became of each job."""

    def __init__(
        self,
        *,
        allow_private: bool = True,
        cap: int = 64,
        find: FindSubscription | None = None,
        circuit: CircuitSettings | None = None,
        egress_proxy: str | None = None,
    ) -> None:
        policy = AddressPolicy(allow_private=allow_private, allow_http=True)
        self.sender = Sender(
            policy=policy, max_connections=100, body_cap=cap, egress_proxy=egress_proxy
        )
        self.followup = RecordingFollowup()
        self.pool = DeliveryPool(
            sender=self.sender,
            policy=policy,
            find=find,
            followup=self.followup,
            circuit=circuit,
        )

    async def deliver(self, event: Event, sub: Subscription) -> AttemptResult | None:
        """Submit one job and wait until it is finished; the attempt's result, if one was made."""
        done = asyncio.Event()
        self.pool.submit(DeliveryJob(event, sub.id, sub, done.set))
        await done.wait()
        return self.followup.results.get(event.id)

    async def attempt(
        self, event: Event, sub: Subscription, *, read_limit: int | None = None
    ) -> tuple[Any, AttemptResult]:
        return await self.pool.attempt(event, sub, read_limit=read_limit)

    async def close(self) -> None:
        await self.pool.close()
        await self.sender.close()


async def make_pool(**options: Any) -> Harness:
    harness = Harness(**options)
    await harness.sender.start()
    return harness


async def delivered(pool: Harness, event: Event, sub: Subscription) -> bool:
    result = await pool.deliver(event, sub)
    return result is not None and result.ok


@dataclass(frozen=True)
class Circuit:
    circuit_window_seconds: float = 60.0
    circuit_min_calls: int = 3
    circuit_failure_rate: float = 1.0
    circuit_open_seconds: float = 0.5
    circuit_max_open_seconds: float = 2.0
    circuit_open_pace: float = 1000.0


class Recorder:
    def __init__(self, responses: list[web.StreamResponse] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.responses = responses or []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{p:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.responses:
            return self.responses.pop(0)
        return web.Response(status=200, text="ok")
