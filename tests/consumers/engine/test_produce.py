"""Producing until acknowledged, one record or many together, over the local backend."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumers.engine.local import LocalBroker, LocalProducer
from consumers.engine.produce import Write, produce_many


async def test_many_are_acknowledged_and_a_refused_one_is_produced_again() -> None:
    broker = LocalBroker()
    producer = LocalProducer(broker)
    # The first send refused by the broker (as one that is away), the second too large for it.
    producer.fail_next(KafkaConnectionError(), MessageSizeTooLargeError())
    writes = [Write(f"v{i}".encode(), b"k") for i in range(4)]
    results = await produce_many(producer, "t", "test", writes)
    assert isinstance(results[1], MessageSizeTooLargeError)  # the caller's to settle
    log = broker.topics["t"][0]
    # Every other one acknowledged, each result naming its own record; the refused one
    # produced again after a backoff, so after the others: nothing is lost.
    assert [log[results[i].offset].value for i in (0, 2, 3)] == [b"v0", b"v2", b"v3"]
    assert [r.value for r in log] == [b"v2", b"v3", b"v0"]
