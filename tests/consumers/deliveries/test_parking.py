"""Parking, through the delivery handler, without a broker: an endpoint at its horizon that
shares its partition is parked, in order, and read back as it has room."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.deliveries.handler import DeliveryHandler
from consumers.deliveries.park_index import ParkIndex
from consumers.deliveries.parking import Parking
from consumers.engine.contract import Rejected, Token
from consumers.engine.local import LocalBroker, LocalProducer
from consumers.events.quarantine import Quarantine
from service.delivery.job import Ending
from service.delivery.record import DeliveryRecord, EventRecord, Origin, encode, retry_headers
from service.retries.policy import RetrySchedule
from tests.consumers.handler_helpers import RecordingQueue, Tokens, offer, subscription
from tools.receiver import wait_until

DELIVERIES = "switchboard.deliveries"
PARKED = "switchboard.parked"
SCHEDULE = RetrySchedule((5.0,), topic_prefix="switchboard.retry")


class Owner:
    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.queue = RecordingQueue()
        self.tokens = Tokens()
        producer = LocalProducer(broker)
        self.parking = Parking(producer=producer, topic=PARKED, load=self._load, read_at=self._read)
        self.handler = DeliveryHandler(
            schedule=SCHEDULE,
            pool=self.queue,
            find={s: subscription(s) for s in ("fast", "slow")}.get,
            quarantine=Quarantine(producer, "switchboard.invalid"),
            parking=self.parking,
        )

    async def _load(self, partition: int) -> ParkIndex:
        index = ParkIndex()
        for record in self.broker.records(PARKED, partition):
            index.fold(record)
        return index

    async def _read(self, partition: int, offsets: list[int]) -> list[ConsumerRecord]:
        return [r for r in self.broker.records(PARKED, partition) if r.offset in offsets]

    async def offer(self, record: ConsumerRecord) -> Token:
        token = self.tokens.token(record.topic, record.partition, record.offset)
        return await offer(self.handler, record, token)

    async def loaded(self) -> None:
        """The partition's parked deliveries have been read."""
        for _ in range(100):
            try:
                self.parking.index(0)
            except Rejected:
                await asyncio.sleep(0.01)
            else:
                return

    def sent(self, sub_id: str) -> list[str]:
        return [j.event.id for j in self.queue.jobs if j.sub_id == sub_id]


def publish(broker: LocalBroker, sub_id: str, event_id: str) -> ConsumerRecord:
    d = DeliveryRecord(
        subscription_id=sub_id,
        event=EventRecord(
            id=event_id,
            source="/v",
            type="call.ended",
            tenant_id="acme",
            time="2026-11-22T10:00:00Z",
            time_unix=0.0,
            data=msgspec.Raw(b"{}"),
        ),
        origin=Origin("voice.events", 0, 0),
        attempts=0,
    )
    md = broker.append(DELIVERIES, encode(d), key=sub_id.encode(), headers=retry_headers(d))
    return broker.records(DELIVERIES)[md.offset]


@pytest.fixture
def broker() -> LocalBroker:
    b = LocalBroker()
    for topic in (DELIVERIES, PARKED, "switchboard.invalid"):
        b.create_topic(topic)
    return b


def live(broker: LocalBroker) -> int:
    index = ParkIndex()
    for record in broker.records(PARKED):
        index.fold(record)
    return index.count()


async def test_a_full_endpoint_sharing_its_partition_is_parked_in_order_and_read_back(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker)
    await owner.offer(publish(broker, "fast", "f0"))
    owner.queue.full["slow"] = 1.0  # at its horizon, for a second at least
    slow = [await owner.offer(publish(broker, "slow", f"s{i}")) for i in range(3)]
    fast = await owner.offer(publish(broker, "fast", "f1"))
    # The slow endpoint's records are parked (and their source records finished), the fast
    # one's are taken: the partition was never held.
    assert await wait_until(lambda: {t.offset for t in slow} <= set(owner.tokens.done), 5)
    assert owner.sent("fast") == ["f0", "f1"]
    assert owner.sent("slow") == []
    assert live(broker) == 3
    del fast
    # Room again: they are read back, in order, and each copy goes once its job finishes.
    del owner.queue.full["slow"]
    owner.handler.poll()
    assert await wait_until(lambda: owner.sent("slow") == ["s0", "s1", "s2"], 5)
    for job in [j for j in owner.queue.jobs if j.sub_id == "slow"]:
        job.finish(Ending.DELIVERED)
    assert await wait_until(lambda: live(broker) == 0, 5)


async def test_an_endpoint_alone_on_its_partition_is_held_not_parked(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker)
    await owner.loaded()
    owner.queue.full["slow"] = 1.0
    with pytest.raises(Rejected):
        owner.handler.submit(publish(broker, "slow", "s0"), owner.tokens.token(DELIVERIES, 0, 0))
    assert broker.records(PARKED) == []


async def test_the_next_owner_skips_what_is_parked_and_parks_behind_it(
    broker: LocalBroker,
) -> None:
    old = Owner(broker)
    await old.offer(publish(broker, "fast", "f0"))
    old.queue.full["slow"] = 1.0
    s0 = publish(broker, "slow", "s0")
    await old.offer(s0)
    assert await wait_until(lambda: live(broker) == 1, 5)
    # The partition moves before s0's source record was committed: the next owner reads it
    # again, skips it (it is parked), and parks the endpoint's next record behind it.
    new = Owner(broker)
    await new.offer(s0)
    assert s0.offset in new.tokens.done
    await new.offer(publish(broker, "slow", "s1"))
    assert await wait_until(lambda: live(broker) == 2, 5)
    new.handler.poll()
    assert await wait_until(lambda: new.sent("slow") == ["s0", "s1"], 5)


async def test_the_next_owner_reads_parked_deliveries_back_with_no_record_to_come(
    broker: LocalBroker,
) -> None:
    old = Owner(broker)
    await old.offer(publish(broker, "fast", "f0"))
    old.queue.full["slow"] = 1.0
    for i in range(2):
        await old.offer(publish(broker, "slow", f"s{i}"))
    assert await wait_until(lambda: live(broker) == 2, 5)
    # The partition moves and nothing more is published to it: its parked deliveries are
    # read as it is assigned, and taken up as the endpoint has room.
    new = Owner(broker)
    new.handler.assigned([TopicPartition(DELIVERIES, 0)])

    def taken_up() -> bool:
        new.handler.poll()  # as the loop does after every fetch
        return new.sent("slow") == ["s0", "s1"]

    assert await wait_until(taken_up, 5)
