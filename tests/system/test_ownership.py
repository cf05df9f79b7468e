"""One owner per endpoint: an endpoint's limits hold for the fleet, measured at the receiver.

Three replicas in one group, every topic with several partitions, so that each replica reads
events and owns some partitions of the deliveries topic. Per-replica limits would let the
endpoint see up to three times its rate and its concurrency.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.conftest import RunningService, produce_events, start_service, wait_until
from tests.helpers.history import poll

REPLICAS = 3
PARTITIONS = 6
EVENTS = 150
RATE = 25
BURST = 5
MAX_IN_FLIGHT = 2
# A request reaches the receiver a little after its token was taken, by however long the
# event loop (three replicas and the receivers share one here) took to send it: requests
# spaced by the bucket can arrive closer together. The windows allow this much for it.
JITTER = 0.1


@dataclass
class Receiver:
    """Records when each request arrived and how many were open at once."""

    latency: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            self.arrivals.append(time.monotonic())
            self.event_ids.append((await request.json())["id"])
            await asyncio.sleep(self.latency)
            return web.Response(status=204)
        finally:
            self.open_now -= 1

    def busiest_second(self) -> int:
        """The most requests that arrived within any window of one second less JITTER."""
        times = sorted(self.arrivals)
        most, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0 - JITTER:
                start += 1
            most = max(most, end - start + 1)
        return most


async def fleet(service_factory: Any) -> list[RunningService]:
    one: RunningService = await service_factory(partitions=PARTITIONS, topic_partitions=PARTITIONS)
    others = [await start_service(one.settings, PARTITIONS) for _ in range(REPLICAS - 1)]
    replicas = [one, *others]

    def settled() -> bool:
        # Every replica owns its share of the deliveries topic and tiers, once the joins of
        # the later replicas have moved partitions away from the first.
        owned = [svc.app.deliveries.partitions_assigned for svc in replicas]
        return all(n > 0 for n in owned) and sum(owned) == PARTITIONS * (
            1 + len(one.app.schedule.topics())
        )

    assert await wait_until(settled, within=30), "the delivery group did not settle"
    return replicas


async def test_an_endpoints_rate_and_concurrency_hold_across_three_replicas(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    replicas = await fleet(service_factory)
    try:
        limited = Receiver()
        narrow = Receiver(latency=0.1)
        one = replicas[0]
        rate_sub = await one.create_subscription(
            tenant_id="acme", name="rate", url=await http_server(limited.app()) + "/h",
            event_types=["*"], rate_limit={"per_second": RATE, "burst": BURST},
        )  # fmt: skip
        narrow_sub = await one.create_subscription(
            tenant_id="acme", name="narrow", url=await http_server(narrow.app()) + "/h",
            event_types=["*"], max_in_flight=MAX_IN_FLIGHT,
        )  # fmt: skip
        for svc in replicas:  # every replica routes by both before an event reaches it
            for sub in (rate_sub, narrow_sub):
                await poll(svc, f"/v1/subscriptions/{sub['id']}", lambda b: "id" in b)
        ids = await produce_events(producer, one.topic, types=["call.ended"] * EVENTS)

        def all_in() -> bool:
            return set(limited.event_ids) >= set(ids) and set(narrow.event_ids) >= set(ids)

        assert await wait_until(all_in, within=60)
        # Every replica took part: each handed off events and owned deliveries.
        assert all(svc.app.events.partitions_assigned > 0 for svc in replicas)
        assert limited.busiest_second() <= RATE + BURST, limited.busiest_second()
        assert narrow.most_open <= MAX_IN_FLIGHT, narrow.most_open
        # Close to the limit, not far below it: the fleet is not one replica's share.
        assert limited.busiest_second() >= RATE * 0.6
        assert narrow.most_open == MAX_IN_FLIGHT
    finally:
        for svc in replicas[1:]:
            await svc.stop()
            await svc.http.close()
