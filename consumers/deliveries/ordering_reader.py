"""Reads one partition of the ordering topic, up to its end, for the partition's new owner."""

from __future__ import annotations

from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.engine.clients import connection_kwargs, stop_consumer
from service.config import Settings
from service.ordering.keys import PartitionKeys

# A fetch returns as soon as records arrive; this bounds the wait on an empty stretch.
_FETCH_TIMEOUT_MS: Final = 1000


async def read_partition(settings: Settings, partition: int) -> PartitionKeys:
    """The keys in `partition` as of now. The previous owner has made its writes durable
    before the rebalance that assigned the partition here completed (its revoke waits for
    its records' grace period), so the end offset read now covers them."""
    tp = TopicPartition(settings.ordering_topic, partition)
    consumer = AIOKafkaConsumer(
        **connection_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        keys = PartitionKeys()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS)
            for record in batch.get(tp, ()):
                keys.fold(record.key, record.value)
        return keys
    finally:
        await stop_consumer(consumer, "ordering reader")
