"""The attempt publisher's buffer while the producer holds its sends (a broker away)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.errors import KafkaTimeoutError

from consumers.attempt_log.publisher import MAX_BUFFERED, MAX_PER_RECORD, AttemptPublisher
from consumers.engine.local import LocalBroker, LocalProducer
from service.attempt_log.record import DECODER, AttemptRecord
from service.observability import metrics
from tools.receiver import wait_until

TOPIC = "switchboard.attempts"
DROPPED = metrics.ATTEMPT_LOG_RECORDS.labels("dropped")


def attempt(i: int) -> AttemptRecord:
    return AttemptRecord(
        id=f"msg_{i}.1", at=1_800_000_000.0 + i, subscription_id="sub_a", tenant_id="acme",
        event_id=f"evt_{i}", event_type="call.ended", webhook_id=f"msg_{i}", attempt=1,
        trigger="delivery", method="POST", url="https://x.example/h", outcome="success",
        status=200, latency_ms=10.0,
    )  # fmt: skip


def published(broker: LocalBroker) -> list[int]:
    """The attempt numbers in the topic, in order."""
    ids = [a.id for r in broker.records(TOPIC) for a in DECODER.decode(r.value or b"")]
    return [int(i.removeprefix("msg_").removesuffix(".1")) for i in ids]


async def sending(producer: LocalProducer, publisher: AttemptPublisher, count: int) -> None:
    """`count` attempts added while the producer holds its sends, the first batch in one."""
    producer.hold()
    for i in range(count):
        publisher.add(attempt(i))
    assert await wait_until(lambda: producer.waiting == 1, within=5)


@pytest.fixture
async def local() -> AsyncIterator[tuple[LocalBroker, LocalProducer, AttemptPublisher]]:
    broker = LocalBroker()
    broker.create_topic(TOPIC)
    producer = LocalProducer(broker)
    publisher = AttemptPublisher(producer, TOPIC)
    publisher.start()
    yield broker, producer, publisher
    await publisher.close()


async def test_a_full_buffer_drops_the_oldest_waiting_never_the_batch_being_sent(
    local: tuple[LocalBroker, LocalProducer, AttemptPublisher],
) -> None:
    broker, producer, publisher = local
    await sending(producer, publisher, MAX_PER_RECORD)  # one batch, in the send
    before = DROPPED._value.get()
    over = 50
    total = MAX_PER_RECORD + MAX_BUFFERED + over
    for i in range(MAX_PER_RECORD, total):
        publisher.add(attempt(i))
    producer.release()
    assert await wait_until(lambda: len(published(broker)) >= total - over, within=10)
    # The batch in the send first, then the newest that the buffer could hold, in order.
    kept = list(range(MAX_PER_RECORD)) + list(range(MAX_PER_RECORD + over, total))
    assert published(broker) == kept
    assert DROPPED._value.get() - before == over


async def test_a_send_that_raises_keeps_its_batch_for_the_next_try(
    local: tuple[LocalBroker, LocalProducer, AttemptPublisher],
) -> None:
    broker, producer, publisher = local
    await sending(producer, publisher, 30)
    for i in range(30, 40):
        publisher.add(attempt(i))
    before = DROPPED._value.get()
    producer.release(KafkaTimeoutError())  # the send waited out its timeout
    # The publisher tries again a second later, from the same first attempt.
    assert await wait_until(lambda: len(published(broker)) == 40, within=5)
    assert published(broker) == list(range(40))
    assert DROPPED._value.get() == before


async def test_close_hands_over_a_batch_whose_send_was_cut_short(
    local: tuple[LocalBroker, LocalProducer, AttemptPublisher],
) -> None:
    broker, producer, publisher = local
    await sending(producer, publisher, 10)
    producer.release()  # the broker is back as the service stops: the cancelled send's batch
    await publisher.close()  # ...is sent by close() rather than lost
    assert published(broker) == list(range(10))
