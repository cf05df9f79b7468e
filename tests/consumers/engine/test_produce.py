"""Producing until acknowledged, one record or many together, over the local backend."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumers.engine.local import LocalBroker, LocalProducer
from consumers.engine.partitioner import KeyPartitioner
from consumers.engine.produce import Write, produce_many, send_batched


async def test_many_are_acknowledged_and_a_refused_batch_is_produced_again() -> None:
    broker = LocalBroker()
    producer = LocalProducer(broker, max_value_bytes=10)
    producer.fail_next(KafkaConnectionError())  # the first batch refused, as by a broker away
    writes = [Write(f"v{i}".encode(), b"k") for i in range(4)]
    writes[1] = Write(b"x" * 11, b"k")  # too large for the broker
    results = await produce_many(producer, "t", "test", writes)
    assert isinstance(results[1], MessageSizeTooLargeError)  # the caller's to settle
    log = broker.topics["t"][0]
    # Every other one acknowledged, each result naming its own record; the batch that held
    # the one too large was produced again a record at a time: nothing else is lost.
    written = [r for i, r in enumerate(results) if i != 1]
    assert [log[r.offset].value for r in written] == [b"v0", b"v2", b"v3"]
    assert [r.value for r in log] == [b"v0", b"v2", b"v3"]


async def test_writes_go_in_one_batch_per_partition_in_their_order() -> None:
    broker = LocalBroker()
    broker.create_topic("t", partitions=3)
    producer = LocalProducer(broker)
    writes = [Write(f"v{i}".encode(), partition=i % 3) for i in range(9)]
    batches, refused = await send_batched(producer, "t", writes, range(9))
    assert refused == {}
    assert sorted(b.indexes for b in batches) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    for batch in batches:
        where = batch.written()
        assert [broker.topics["t"][w.partition][w.offset].value for w in where] == [
            writes[i].value for i in batch.indexes
        ]


async def test_a_keyed_write_goes_where_the_producer_would_send_it() -> None:
    broker = LocalBroker()
    broker.create_topic("t", partitions=12)
    producer = LocalProducer(broker)
    batches, _ = await send_batched(producer, "t", [Write(b"v", b"sub_1")], [0])
    (where,) = batches[0].written()
    # murmur2, as Kafka's clients and aiokafka's default partitioner (test_partitioner.py)
    assert where.partition == KeyPartitioner()(b"sub_1", list(range(12)), list(range(12)))
