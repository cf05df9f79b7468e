"""Ordered delivery per key, through the delivery handler, without a broker.

The pool's place is taken by a queue the test finishes jobs from, with the ending it
chooses; the ordering topic is a LocalBroker topic, read back by a second handler to play
the partition's next owner.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.deliveries.handler import DeliveryHandler, OrderingSetup
from consumers.engine.contract import Producer, RecordBatch, Rejected, Token
from consumers.engine.local import LocalBatch, LocalBroker, LocalProducer, Metadata
from consumers.events.quarantine import Quarantine
from service.delivery.job import DeliveryJob, Ending
from service.delivery.record import DeliveryRecord, EventRecord, Origin, encode, retry_headers
from service.ordering.control import release_record
from service.ordering.keys import PartitionKeys
from service.retries.policy import RetrySchedule
from service.subscriptions.fields import Ordering
from service.subscriptions.model import Subscription
from tests.consumers.handler_helpers import RecordingQueue, Tokens, offer, subscription
from tools.receiver import wait_until

DELIVERIES = "switchboard.deliveries"
ORDERING = "switchboard.ordering"
SCHEDULE = RetrySchedule((5.0,), topic_prefix="switchboard.retry")
TIER = SCHEDULE.topics()[0]


def ordered(after_dead_letter: str = "continue") -> Subscription:
    return subscription(ordering=Ordering(key="data.call.id", after_dead_letter=after_dead_letter))  # type: ignore[arg-type]


class Owner:
    """One replica's delivery handler for partition 0."""

    def __init__(
        self, broker: LocalBroker, sub: Subscription, producer: Producer | None = None
    ) -> None:
        self.broker = broker
        self.now = 1_800_000_000.0
        self.queue = RecordingQueue()
        self.tokens = Tokens()
        self.subs = {sub.id: sub}
        producer = producer or LocalProducer(broker)
        self.handler = DeliveryHandler(
            schedule=SCHEDULE,
            pool=self.queue,
            find=self.subs.get,
            quarantine=Quarantine(producer, "switchboard.invalid"),
            ordering=OrderingSetup(
                producer=producer,
                topic=ORDERING,
                deliveries_topic=DELIVERIES,
                load=self._load,
                read_at=self._read,
                idle_seconds=3600,
            ),
            clock=lambda: self.now,
        )

    async def _load(self, partition: int) -> PartitionKeys:
        keys = PartitionKeys()
        for record in self.broker.records(ORDERING, partition):
            keys.fold(record.key, record.value, record.offset)
        return keys

    async def _read(self, partition: int, offsets: list[int]) -> list[ConsumerRecord]:
        return [r for r in self.broker.records(ORDERING, partition) if r.offset in offsets]

    async def offer(self, record: ConsumerRecord) -> Token:
        token = self.tokens.token(record.topic, record.partition, record.offset)
        return await offer(self.handler, record, token)

    def job(self, event_id: str) -> DeliveryJob:
        """The latest job for an event."""
        return [j for j in self.queue.jobs if j.event.id == event_id][-1]

    async def end(self, event_id: str, ending: Ending) -> None:
        """Finish the event's job as the followup would, and let the key settle."""
        job = self.job(event_id)
        if ending is Ending.RETRYING:
            # The followup's retry record, as it would be written.
            retry = msgspec.structs.replace(
                record_of(job), attempts=job.attempts + 1, sequence=job.sequence
            )
            self.broker.append(TIER, encode(retry), key=b"sub_1", headers=retry_headers(retry))
        job.finish(ending)
        await settle()


def record_of(job: DeliveryJob) -> DeliveryRecord:
    return DeliveryRecord(
        subscription_id=job.sub_id,
        event=EventRecord.of(job.event),
        origin=Origin("voice.events", 0, 0),
        attempts=0,
    )


def event(event_id: str, call: str) -> DeliveryRecord:
    return DeliveryRecord(
        subscription_id="sub_1",
        event=EventRecord(
            id=event_id, source="/v", type="call.ended", tenant_id="acme",
            time="2026-11-22T10:00:00Z", time_unix=0.0,
            data=msgspec.Raw(msgspec.json.encode({"call": {"id": call}})),
        ),
        origin=Origin("voice.events", 0, 0),
        attempts=0,
    )  # fmt: skip


def publish(broker: LocalBroker, *deliveries: DeliveryRecord) -> list[ConsumerRecord]:
    out = []
    for d in deliveries:
        md = broker.append(DELIVERIES, encode(d), key=b"sub_1", headers=retry_headers(d))
        out.append(broker.records(DELIVERIES)[md.offset])
    return out


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def sent(owner: Owner) -> list[tuple[str, int | None]]:
    return [(j.event.id, j.sequence) for j in owner.queue.jobs]


@pytest.fixture
def broker() -> LocalBroker:
    b = LocalBroker()
    for topic in (DELIVERIES, ORDERING, TIER, "switchboard.invalid"):
        b.create_topic(topic)
    return b


async def test_a_key_is_delivered_one_at_a_time_in_order_and_other_keys_do_not_wait(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered())
    records = publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("x1", "CA2"))
    tokens = [await owner.offer(r) for r in records]
    assert sent(owner) == [("e1", 1), ("x1", 1)]  # e2 waits for e1; CA2 does not
    await owner.end("e1", Ending.DELIVERED)
    assert sent(owner) == [("e1", 1), ("x1", 1), ("e2", 2)]
    assert owner.tokens.done == [tokens[0].offset]
    await owner.end("e2", Ending.DELIVERED)
    await owner.end("x1", Ending.DELIVERED)
    assert sorted(owner.tokens.done) == [0, 1, 2]


async def test_a_failed_delivery_holds_only_its_key_until_its_retry_succeeds(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered())
    first = publish(broker, event("e1", "CA1"), event("e2", "CA1"))
    for r in first:
        await owner.offer(r)
    await owner.end("e1", Ending.RETRYING)
    # e2 was waiting behind e1: now held in the ordering topic, its source record finished.
    assert await wait_until(lambda: owner.tokens.done == [0, 1], 5)
    later = publish(broker, event("e3", "CA1"), event("y1", "CA2"))
    for r in later:
        await owner.offer(r)
    await settle()
    assert sent(owner) == [("e1", 1), ("y1", 1)]
    assert owner.tokens.done == [0, 1, 2]  # e3 held; y1 still running
    # The retry comes due: e1 again, with its sequence number, then e2 and e3 in order.
    await owner.offer(broker.records(TIER)[-1])
    assert sent(owner)[-1] == ("e1", 1)
    await owner.end("e1", Ending.DELIVERED)
    assert sent(owner)[-1] == ("e2", 2)
    await owner.end("e2", Ending.DELIVERED)
    assert sent(owner)[-1] == ("e3", 3)
    await owner.end("e3", Ending.DELIVERED)
    assert [k for k in map(_kind, broker.records(ORDERING)) if k == "h"] == ["h", "h"]
    live = PartitionKeys()
    for r in broker.records(ORDERING):
        live.fold(r.key, r.value, r.offset)
    assert live.held == {}  # both held records were tombstoned
    assert live.states[("sub_1", "CA1")].seq == 3


def _kind(record: ConsumerRecord) -> str:
    return "h" if record.value is not None and record.key.startswith(b'["h"') else "k"


@pytest.mark.parametrize(("mode", "released"), [("continue", True), ("hold", False)])
async def test_after_a_dead_letter_the_key_continues_or_stops_until_released(
    broker: LocalBroker, mode: str, released: bool
) -> None:
    owner = Owner(broker, ordered(mode))
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1")):
        await owner.offer(r)
    await owner.end("e1", Ending.DEAD_LETTERED)
    assert (sent(owner)[-1] == ("e2", 2)) is released
    if released:
        return
    # An operator releases the key: a control record in the deliveries partition.
    value, headers = release_record("sub_1", "CA1")
    broker.append(DELIVERIES, value, key=b"sub_1", headers=headers)
    await owner.offer(broker.records(DELIVERIES)[-1])
    assert await wait_until(lambda: sent(owner)[-1] == ("e2", 2), 5)


async def test_the_next_owner_knows_the_waiting_keys_and_skips_what_was_taken(
    broker: LocalBroker,
) -> None:
    old = Owner(broker, ordered())
    records = publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("x1", "CA2"))
    for r in records:
        await old.offer(r)
    await old.end("x1", Ending.DELIVERED)
    await old.end("e1", Ending.RETRYING)
    assert await wait_until(lambda: sorted(old.tokens.done) == [0, 1, 2], 5)
    # The partition moves: the next owner reads everything again (as if nothing had been
    # committed) and a new delivery of the waiting key arrives.
    new = Owner(broker, ordered())
    more = publish(broker, event("e4", "CA1"), event("x2", "CA2"))
    for r in [*records, *more]:
        await new.offer(r)
    await settle()
    # Nothing of CA1 is delivered before e1's retry; x2 goes out with the next number.
    assert sent(new) == [("x2", 2)]
    assert sorted(new.tokens.done) == [0, 1, 2, 3]
    await new.offer(broker.records(TIER)[-1])
    for expected in [("e1", 1), ("e2", 2), ("e4", 3)]:
        assert sent(new)[-1] == expected
        await new.end(expected[0], Ending.DELIVERED)


async def test_an_event_without_the_key_is_delivered_unordered(broker: LocalBroker) -> None:
    owner = Owner(broker, ordered())
    no_key = msgspec.structs.replace(event("n1", "CA1"), event=msgspec.structs.replace(
        event("n1", "CA1").event, data=msgspec.Raw(b'{"call": {}}')))  # fmt: skip
    for r in publish(broker, event("e1", "CA1"), no_key):
        await owner.offer(r)
    assert sent(owner) == [("e1", 1), ("n1", None)]


async def test_a_retry_that_comes_due_before_its_key_has_settled_waits_for_it(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered())
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1")):
        await owner.offer(r)
    job = owner.job("e1")
    retry = msgspec.structs.replace(record_of(job), attempts=1, sequence=job.sequence)
    broker.append(TIER, encode(retry), key=b"sub_1", headers=retry_headers(retry))
    job.finish(Ending.RETRYING)
    # The key's new state (waiting for e1's retry) is not written yet: the retry is not
    # taken for a repeat, it is offered again once the key has settled.
    token = owner.tokens.token(TIER, 0, 0)
    with pytest.raises(Rejected):
        owner.handler.submit(broker.records(TIER)[0], token)
    await settle()
    await owner.offer(broker.records(TIER)[0])
    await owner.end("e1", Ending.DELIVERED)
    assert sent(owner) == [("e1", 1), ("e1", 1), ("e2", 2)]


async def test_a_subscription_no_longer_ordered_lets_its_waiting_keys_go_on(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered("hold"))
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("e3", "CA1")):
        await owner.offer(r)
    await owner.end("e1", Ending.DEAD_LETTERED)
    assert sent(owner) == [("e1", 1)]  # the key is stopped, e2 and e3 held
    # The customer turns ordering off: nothing would ever release the key, so the next
    # sweep lets it go on, in order.
    owner.subs["sub_1"] = msgspec.structs.replace(owner.subs["sub_1"], ordering=None)
    owner.now += 61
    owner.handler.poll()
    await settle()
    assert sent(owner)[-1] == ("e2", 2)
    await owner.end("e2", Ending.DELIVERED)
    assert sent(owner)[-1] == ("e3", 3)


async def stopped_while_taking_up_held(broker: LocalBroker) -> None:
    """An owner whose key CA1 waited behind e1's retry, with e2 and e3 held, stops once it has
    taken e2 up again."""
    old = Owner(broker, ordered())
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("e3", "CA1")):
        await old.offer(r)
    await old.end("e1", Ending.RETRYING)
    await old.offer(broker.records(TIER)[-1])
    await old.end("e1", Ending.DELIVERED)
    assert sent(old)[-1] == ("e2", 2)  # taken up from the held ones, then the owner stops


async def test_the_next_owner_goes_on_with_held_deliveries_the_previous_one_had_begun(
    broker: LocalBroker,
) -> None:
    await stopped_while_taking_up_held(broker)
    new = Owner(broker, ordered())
    await new.offer(publish(broker, event("x1", "CA2"))[0])  # the partition's keys are read
    new.handler.poll()
    assert await wait_until(lambda: sent(new) == [("x1", 1), ("e2", 2)], 5)
    await new.end("e2", Ending.DELIVERED)
    assert sent(new)[-1] == ("e3", 3)


class GatedProducer:
    """Appends each record at once, and acknowledges them when the test says so; remembers
    how many records were sent before each acknowledgement."""

    def __init__(self, broker: LocalBroker) -> None:
        self._local = LocalProducer(broker)
        self._unacked: list[tuple[asyncio.Future[Metadata], Metadata]] = []
        self.sent: list[bytes | None] = []  # the keys, in sending order

    async def send(self, topic: str, **record: Any) -> asyncio.Future[Metadata]:
        md = await self._local.send_and_wait(topic, **record)
        self.sent.append(record.get("key"))
        acked: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        self._unacked.append((acked, md))
        return acked

    async def send_and_wait(self, topic: str, **record: Any) -> Metadata:
        return await (await self.send(topic, **record))

    def create_batch(self) -> LocalBatch:
        return LocalBatch()

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Metadata]:
        assert isinstance(batch, LocalBatch)
        sent = []
        for key, value, headers in batch.records:
            record = {"key": key, "value": value, "headers": list(headers)}
            sent.append(await self.send(topic, partition=partition, **record))
        return sent[0]

    async def partitions_for(self, topic: str) -> set[int]:
        return await self._local.partitions_for(topic)

    def ack(self) -> None:
        for acked, md in self._unacked:
            if not acked.done():  # cancelled with its writer
                acked.set_result(md)
        self._unacked.clear()


async def test_a_partitions_state_writes_are_batched_and_finish_records_once_acknowledged(
    broker: LocalBroker,
) -> None:
    producer = GatedProducer(broker)
    owner = Owner(broker, ordered(), producer)
    calls = ["CA1", "CA2", "CA3", "CA1"]
    records = publish(broker, *(event(f"e{i}", call) for i, call in enumerate(calls)))
    for r in records:
        await owner.offer(r)
    assert sent(owner) == [("e0", 1), ("e1", 1), ("e2", 1)]  # e3 waits behind e0 (CA1)
    owner.job("e0").finish(Ending.DELIVERED)
    await settle()
    assert len(producer.sent) == 1  # e0's state, not acknowledged yet
    assert owner.tokens.done == []
    owner.job("e1").finish(Ending.DELIVERED)
    owner.job("e2").finish(Ending.DELIVERED)
    await settle()
    # Not written while e0's batch waits for its acknowledgement; nothing finished, and
    # CA1's next delivery not started.
    assert len(producer.sent) == 1
    assert owner.tokens.done == []
    assert sent(owner)[-1] == ("e2", 1)
    producer.ack()
    await settle()
    assert owner.tokens.done == [0]
    assert sent(owner)[-1] == ("e3", 2)
    # CA2's and CA3's states, written together in the next batch.
    assert producer.sent[1:] == [b'["k","sub_1","CA2"]', b'["k","sub_1","CA3"]']
    # The partition is revoked while that batch waits: its records are given up, to be read
    # again by the next owner, and its acknowledgement, late, finishes none of them.
    owner.handler.revoked([TopicPartition(DELIVERIES, 0)])
    producer.ack()
    await settle()
    assert owner.tokens.done == [0]
    assert sorted(owner.tokens.abandoned) == [1, 2, 3]  # e3: queued, not started
    assert sent(owner)[-1] == ("e3", 2)


async def test_a_job_that_ends_in_a_revokes_grace_period_finishes_its_record_and_nothing_more(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered())
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1")):
        await owner.offer(r)
    owner.job("e1").attempting(owner.now)
    owner.handler.revoked([TopicPartition(DELIVERIES, 0)])
    # e1's request was on the wire: it gets the grace period, and its ending is made
    # durable, so that its record is committed; e2, behind it, is left to the next owner.
    await owner.end("e1", Ending.DELIVERED)
    assert owner.tokens.done == [0]
    assert sent(owner) == [("e1", 1)]
    assert [_kind(r) for r in broker.records(ORDERING)] == ["k"]


async def test_a_revoke_gives_up_at_once_the_deliveries_waiting_behind_a_running_one(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered())
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("e3", "CA1")):
        await owner.offer(r)
    owner.job("e1").attempting(owner.now)  # its request is on the wire
    owner.handler.revoked([TopicPartition(DELIVERIES, 0)])
    # e2 and e3 have nothing begun: the loop's grace period must not wait for them (it
    # would until its end, since nothing finishes them now), only for e1's request.
    assert owner.tokens.abandoned == [1, 2]
    assert owner.tokens.done == []
    await owner.end("e1", Ending.DELIVERED)
    assert owner.tokens.done == [0]
    assert sent(owner) == [("e1", 1)]


async def test_an_event_handed_off_again_after_a_crash_is_a_repeat_not_a_new_number(
    broker: LocalBroker,
) -> None:
    owner = Owner(broker, ordered())
    first = publish(broker, event("e1", "CA1"), event("e2", "CA1"))
    for r in first:
        await owner.offer(r)
    await owner.end("e1", Ending.DELIVERED)
    # The events stage crashed before committing e2 and e1: both handed off again, behind e2
    # (queued in memory) and after e1 (taken), then a new event.
    again = publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("e3", "CA1"))
    tokens = [await owner.offer(r) for r in again]
    assert again[0].offset in owner.tokens.done  # e1 was taken: a repeat, at once
    await owner.end("e2", Ending.DELIVERED)
    assert again[1].offset in owner.tokens.done  # e2 was taken meanwhile: skipped in the lane
    assert sent(owner) == [("e1", 1), ("e2", 2), ("e3", 3)]
    del tokens


async def test_held_deliveries_go_on_after_a_rebalance_with_no_record_to_come(
    broker: LocalBroker,
) -> None:
    await stopped_while_taking_up_held(broker)
    # The partition moves; no record of it comes again: its keys are read as it is assigned.
    new = Owner(broker, ordered())
    new.handler.assigned([TopicPartition(DELIVERIES, 0), TopicPartition(TIER, 0)])
    await settle()
    new.handler.poll()
    assert await wait_until(lambda: sent(new) == [("e2", 2)], 5)
    await new.end("e2", Ending.DELIVERED)
    assert sent(new)[-1] == ("e3", 3)


async def test_an_event_held_twice_is_delivered_once(broker: LocalBroker) -> None:
    owner = Owner(broker, ordered())
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1")):
        await owner.offer(r)
    await owner.end("e1", Ending.RETRYING)  # the key waits: e2 is held
    # The events stage hands e2 off again meanwhile: held behind the first copy.
    await owner.offer(publish(broker, event("e2", "CA1"))[0])
    await owner.offer(broker.records(TIER)[-1])
    await owner.end("e1", Ending.DELIVERED)
    assert await wait_until(lambda: sent(owner)[-1] == ("e2", 2), 5)
    await owner.end("e2", Ending.DELIVERED)
    await owner.offer(publish(broker, event("e3", "CA1"))[0])
    assert await wait_until(lambda: sent(owner)[-1] == ("e3", 3), 5)
    assert [e for e, _ in sent(owner)].count("e2") == 1


class LateCopies(Owner):
    """An owner whose first read of each held copy misses it, as a broker that shows an
    acknowledged write a moment late does."""

    def __init__(self, broker: LocalBroker, sub: Subscription) -> None:
        super().__init__(broker, sub)
        self.missed: list[int] = []

    async def _read(self, partition: int, offsets: list[int]) -> list[ConsumerRecord]:
        if offsets[0] not in self.missed:
            self.missed.append(offsets[0])
            return []
        return await super()._read(partition, offsets)


async def test_a_held_copy_read_back_late_keeps_its_key_waiting_until_it_is_found(
    broker: LocalBroker,
) -> None:
    owner = LateCopies(broker, ordered())
    for r in publish(broker, event("e1", "CA1"), event("e2", "CA1"), event("e3", "CA1")):
        await owner.offer(r)
    await owner.end("e1", Ending.RETRYING)
    assert await wait_until(lambda: owner.tokens.done == [0, 1, 2], 5)  # e2, e3 held
    await owner.offer(broker.records(TIER)[-1])
    await owner.end("e1", Ending.DELIVERED)
    # e2's copy is not found at first: the key waits for it, e3 does not go before it.
    assert sent(owner)[-1] == ("e1", 1)
    assert await wait_until(lambda: sent(owner)[-1] == ("e2", 2), 5)
    await owner.end("e2", Ending.DELIVERED)
    assert await wait_until(lambda: sent(owner)[-1] == ("e3", 3), 5)
    assert len(owner.missed) == 2
