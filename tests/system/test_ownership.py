"""One owner per endpoint: an endpoint's limits hold for the fleet, measured at the receiver.

Three replicas in one group, every topic with several partitions, so that each replica reads
events and owns some partitions of the deliveries topic. Per-replica limits would let the
endpoint see up to three times its rate and its concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.delivery.circuit import State
from service.delivery.horizon import HORIZON_SECONDS, MIN_QUEUED_PER_WORKER
from service.delivery.record import DUE_HEADER, decode
from service.delivery.signing import message_id
from service.observability import metrics
from service.subscriptions.fields import DEFAULT_MAX_IN_FLIGHT
from tests.conftest import RunningService, produce_events, start_service, wait_until
from tests.helpers.history import dead_letters, poll
from tests.helpers.kafka import read_all
from tests.system.test_retries import Endpoint, status
from tools.partitions import partition_of
from tools.tansu import free_port

REPLICAS = 3
PARTITIONS = 6
EVENTS = 150
RATE = 25
BURST = 5
MAX_IN_FLIGHT = 2
# A request reaches the receiver a little after its token was taken, by however long the
# event loop (three replicas and the receivers share one here) took to send it: requests
# spaced by the bucket can arrive closer together (seen: 34 in a second for 30 allowed, at a
# load average of 15 on 2 cores). The windows allow this much for it; three replicas each
# with its own bucket would still show up at three times the limit.
JITTER = 0.25
SLOW_RATE = 40
SHARED_EVENTS = 1200


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


@contextlib.asynccontextmanager
async def fleet(service_factory: Any, **overrides: Any) -> AsyncIterator[list[RunningService]]:
    """Three replicas in one group, settled; the first is stopped by the fixture, the others
    here (unless a test stopped one already)."""
    one: RunningService = await service_factory(
        partitions=PARTITIONS, topic_partitions=PARTITIONS, **overrides
    )
    others = [await start_service(one.settings, PARTITIONS) for _ in range(REPLICAS - 1)]
    replicas = [one, *others]

    def settled() -> bool:
        # Every replica owns its share of the deliveries topic and tiers, once the joins of
        # the later replicas have moved partitions away from the first.
        owned = [svc.app.deliveries.partitions_assigned for svc in replicas]
        return all(n > 0 for n in owned) and sum(owned) == PARTITIONS * (
            1 + len(one.app.schedule.topics())
        )

    try:
        assert await wait_until(settled, within=30), "the delivery group did not settle"
        yield replicas
    finally:
        for svc in others:
            if not svc.task.done():
                await svc.stop()
            await svc.http.close()


async def known_to_all(replicas: list[RunningService], *subs: dict[str, Any]) -> None:
    """Every replica routes by the subscriptions before an event reaches it."""
    for svc in replicas:
        for sub in subs:
            await poll(svc, f"/v1/subscriptions/{sub['id']}", lambda b: "id" in b)


async def test_an_endpoints_rate_and_concurrency_hold_across_three_replicas(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    async with fleet(service_factory) as replicas:
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
        await known_to_all(replicas, rate_sub, narrow_sub)
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


async def healthy_beside(
    svc: RunningService, url: str, other: dict[str, Any], *, partitions: int
) -> dict[str, Any]:
    """A healthy subscription on another partition of the deliveries topic than `other`."""
    while True:
        sub = await svc.create_subscription(
            tenant_id="acme", name="healthy", url=url, event_types=["*"]
        )
        if partition_of(sub["id"], partitions) != partition_of(other["id"], partitions):
            return sub
        async with svc.http.delete(f"{svc.base}/v1/subscriptions/{sub['id']}") as resp:
            assert resp.status == 204


async def drained_beside(
    svc: RunningService, producer: AIOKafkaProducer, healthy: Receiver, other: dict[str, Any]
) -> int:
    """Produce 2,000 events and wait until the healthy endpoint has every one; the most that
    `other` had queued meanwhile."""
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 2000)
    most_queued = 0

    def healthy_done() -> bool:
        nonlocal most_queued
        most_queued = max(most_queued, svc.app.pool.queued(other["id"]))
        return set(healthy.event_ids) == set(ids)

    assert await wait_until(healthy_done, within=60)
    return most_queued


async def test_a_slow_endpoints_backlog_stays_in_kafka_and_holds_back_no_other_partition(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    # A cap the slow endpoint's backlog would fill many times over, were it read into memory.
    svc: RunningService = await service_factory(topic_partitions=4, max_records_in_flight=300)
    slow, healthy = Receiver(), Receiver()
    slow_url = await http_server(slow.app()) + "/h"
    slow_sub = await svc.create_subscription(
        tenant_id="acme", name="slow", url=slow_url, event_types=["*"],
        rate_limit={"per_second": 10},
    )  # fmt: skip
    await healthy_beside(svc, await http_server(healthy.app()) + "/h", slow_sub, partitions=4)
    # 2,000 events at 10/s would take the slow endpoint 200 s; the healthy one is not held
    # behind it.
    most_queued = await drained_beside(svc, producer, healthy, slow_sub)
    assert len(slow.event_ids) < 1000
    # The slow endpoint's queue filled up to its horizon and no further: the rest of its
    # backlog waited in Kafka, not in the in-flight cap. On a busy machine the healthy
    # endpoint can be done first (seen with 46 of 80 queued): the queue is watched on until
    # it has filled, and must not pass its horizon meanwhile.
    horizon = max(10 * HORIZON_SECONDS, MIN_QUEUED_PER_WORKER * int(slow_sub["max_in_flight"]))

    def filled() -> bool:
        nonlocal most_queued
        most_queued = max(most_queued, svc.app.pool.queued(slow_sub["id"]))
        return most_queued >= horizon * 0.8

    assert await wait_until(filled, within=10)
    assert most_queued <= horizon < 300


async def test_a_dead_endpoints_backlog_is_failed_at_its_pace_and_holds_back_no_other_partition(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    pace = 20
    svc: RunningService = await service_factory(
        topic_partitions=4, max_records_in_flight=300, circuit_min_calls=20,
        circuit_open_seconds=60, circuit_open_pace=pace,
    )  # fmt: skip
    dead_url = f"http://127.0.0.1:{free_port()}/h"  # nothing listens: refused at connect
    dead_sub = await svc.create_subscription(
        tenant_id="acme", name="dead", url=dead_url, event_types=["*"]
    )
    healthy = Receiver()
    await healthy_beside(svc, await http_server(healthy.app()) + "/h", dead_sub, partitions=4)
    refused = metrics.DELIVERY_ATTEMPTS.labels("circuit_open", "none")
    before = refused._value.get()
    started = time.monotonic()
    most_queued = await drained_beside(svc, producer, healthy, dead_sub)
    # Its circuit opened after its minimum of calls; from then on its attempts were counted
    # as failed at its pace (a second's burst, then `pace` a second), the rest of its backlog
    # waiting in Kafka, not in memory: at most its horizon queued.
    counted = refused._value.get() - before
    assert 0 < counted <= pace * (time.monotonic() - started) + pace
    horizon = max(pace * HORIZON_SECONDS, MIN_QUEUED_PER_WORKER * DEFAULT_MAX_IN_FLIGHT)
    assert most_queued <= horizon + 1
    assert svc.app.pool.circuits_in(State.OPEN) == 1


async def test_a_slow_endpoint_sharing_the_partition_is_parked_and_holds_back_nothing(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    # One partition: the two endpoints' records interleave in it.
    svc: RunningService = await service_factory(max_records_in_flight=300)
    slow, healthy = Receiver(), Receiver()
    slow_sub = await svc.create_subscription(
        tenant_id="acme", name="slow", url=await http_server(slow.app()) + "/h",
        event_types=["*"], rate_limit={"per_second": SLOW_RATE},
    )  # fmt: skip
    await svc.create_subscription(
        tenant_id="acme", name="healthy", url=await http_server(healthy.app()) + "/h",
        event_types=["*"],
    )  # fmt: skip
    parked_before = metrics.DELIVERIES_PARKED._value.get()
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * SHARED_EVENTS)
    # Held behind the slow endpoint, the healthy one would take SHARED_EVENTS / SLOW_RATE
    # (30 s); parked, the slow one holds back nothing.
    assert await wait_until(lambda: set(healthy.event_ids) == set(ids), within=15)
    assert len(slow.event_ids) < SHARED_EVENTS * 0.6
    assert metrics.DELIVERIES_PARKED._value.get() > parked_before
    assert svc.app.pool.queued(slow_sub["id"]) <= SLOW_RATE * HORIZON_SECONDS
    # The parked endpoint still gets every event, at its own pace, and nothing stays parked.
    assert await wait_until(lambda: set(slow.event_ids) == set(ids), within=90)
    assert len(slow.event_ids) == SHARED_EVENTS
    assert await wait_until(lambda: metrics.PARKED_DELIVERIES._value.get() == 0, within=10)


async def test_a_dead_endpoints_circuit_is_one_for_the_fleet(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    circuit = {"circuit_open_seconds": 60, "circuit_min_calls": 20, "circuit_failure_rate": 0.8}
    async with fleet(service_factory, retry_schedule="0.2,0.4", **circuit) as replicas:
        dead = Endpoint(lambda _a: status(503))
        one = replicas[0]
        sub = await one.create_subscription(
            tenant_id="acme", name="d", url=await http_server(dead.app()) + "/h",
            event_types=["*"], max_attempts=3, max_in_flight=1,
        )  # fmt: skip
        await known_to_all(replicas, sub)
        ids = await produce_events(producer, one.topic, types=["call.ended"] * 40)
        letters = await dead_letters(
            one, f"&subscription_id={sub['id']}", within=30,
            until=lambda d: {x["event"]["id"] for x in d} == set(ids),
        )  # fmt: skip
        assert {d["reason"] for d in letters} == {"exhausted"}
        # One circuit, the owner's: its minimum of calls reached the endpoint, not that many
        # per replica.
        assert len(dead.arrivals) <= 20 + 1
        assert sum(svc.app.pool.circuits_in(State.OPEN) for svc in replicas) == 1


async def test_a_replica_leaving_mid_stream_hands_its_endpoints_over_without_loss(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    async with fleet(service_factory) as replicas:
        leaving = replicas[1]
        receiver = Receiver()
        one = replicas[0]
        sub = await one.create_subscription(
            tenant_id="acme", name="rate", url=await http_server(receiver.app()) + "/h",
            event_types=["*"], rate_limit={"per_second": RATE, "burst": BURST},
        )  # fmt: skip
        await known_to_all(replicas, sub)
        ids = await produce_events(producer, one.topic, types=["call.ended"] * EVENTS)
        assert await wait_until(lambda: len(receiver.event_ids) >= EVENTS // 3, within=30)
        await leaving.stop()  # SIGTERM's path: drain, commit, leave the group
        assert await wait_until(lambda: set(receiver.event_ids) >= set(ids), within=60)
        # Nothing lost. (Repeats are allowed, at least once: alone they are at most the requests
        # on the wire; on a machine loaded far past its cores, more were seen, see the note
        # in docs/architecture.md.)
        # The old owner gave up what it had not sent, so the handover overlaps by at most the
        # new owner's first burst.
        assert receiver.busiest_second() <= RATE + 2 * BURST, receiver.busiest_second()


async def test_retries_through_resting_tiers_are_read_in_time_across_the_fleet(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    """The 8 s tier's partitions rest while idle (read at a look every 2 s): every event's
    second retry goes through them, written by whichever replica owns the partition, and is
    still made when due, not at the next look after."""
    async with fleet(service_factory, retry_schedule="3,8") as replicas:
        schedule = replicas[0].app.schedule
        tier = schedule.topic(8.0)
        assert schedule.earliest_due(8.0) == pytest.approx(3.6)  # over a look's 2.5 s (50 ms waits)

        def resting(topic: str) -> int:
            parts = [svc.app.deliveries.partitions_resting for svc in replicas]
            return sum(1 for owned in parts for tp in owned if tp.topic == topic)

        assert await wait_until(lambda: resting(tier) == PARTITIONS, within=30)
        assert resting(schedule.topic(3.0)) == 0  # due at once at the soonest: never rests
        answers: dict[str, int] = {}

        def third_time_lucky(arrival: Any) -> web.Response:
            answers[arrival.webhook_id] = answers.get(arrival.webhook_id, 0) + 1
            return status(503 if answers[arrival.webhook_id] <= 2 else 204)

        # Subscriptions in four partitions of the six, so that their retries are written and
        # read by at least two of the replicas (each owns two).
        endpoint = Endpoint(third_time_lucky)
        base = await http_server(endpoint.app())
        subs: list[str] = []
        while len({partition_of(sub, PARTITIONS) for sub in subs}) < 4 and len(subs) < 30:
            sub = await replicas[0].create_subscription(tenant_id="acme", name=f"crm{len(subs)}",
                                                        url=f"{base}/h{len(subs)}",
                                                        event_types=["*"])  # fmt: skip
            subs.append(sub["id"])
        expected = 30 * len(subs)
        ids = await produce_events(producer, replicas[0].topic, types=["call.ended"] * 30)

        def made() -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {}
            for arrival in endpoint.arrivals:
                out.setdefault(arrival.webhook_id, []).append(arrival)
            return out

        assert await wait_until(
            lambda: sum(a.status == 204 for a in endpoint.arrivals) == expected, within=60
        )
        by_webhook = made()
        assert all([a.status for a in arrivals] == [503, 503, 204]
                   for arrivals in by_webhook.values())  # fmt: skip
        assert {a.event_id for a in endpoint.arrivals} == set(ids)
        # Each second retry against its due time. A tier is read in order, so a record goes
        # out once every record before it in its partition is due: its own due time, or
        # the latest of theirs. Read at the next look instead, most would be seconds late.
        records = await read_all(replicas[0].settings.kafka_bootstrap_servers, tier, expected)
        assert len(records) == expected
        assert len({r.partition for r in records}) >= 4
        due_by_partition: dict[int, float] = {}
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            due = max(int(dict(record.headers)[DUE_HEADER]) / 1000,
                      due_by_partition.get(record.partition, 0.0))  # fmt: skip
            due_by_partition[record.partition] = due
            pending = decode(record.value)
            third = by_webhook[message_id(pending.subscription_id, pending.event.id)][2].at
            assert due - 0.05 <= third <= due + 1.0, (record.partition, record.offset, third - due)
