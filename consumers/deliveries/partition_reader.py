"""Reading the delivery stage's state topics (ordering keys, parked deliveries) by partition:
all of a partition for its new owner, or given records of it by offset."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumers.deliveries.park_index import ParkIndex
from consumers.engine.clients import connection_kwargs, fetch_kwargs, stop_consumer
from service.config import Settings
from service.ordering.keys import PartitionKeys

# A fetch returns as soon as records arrive; this bounds the wait on an empty stretch.
_FETCH_TIMEOUT_MS: Final = 1000
# Records wanted past the partition's end offset are fetched for this long before they are
# taken for gone (see OffsetReader.read).
_PAST_END_WITHIN: Final = 2.0


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **connection_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **fetch_kwargs(settings),
    )


async def read_partition(
    settings: Settings, topic: str, partition: int, fold: Callable[[ConsumerRecord], None]
) -> None:
    """Fold every record of the partition as of now, in order. The previous owner has made
    its writes durable before the rebalance that assigned the partition here completed (its
    revoke waits for its records' grace period), so the end offset read now covers them."""
    tp = TopicPartition(topic, partition)
    consumer = _consumer(settings)
    try:
        # Inside: a read cancelled while it connects (its partition revoked, or shutdown)
        # still closes what it opened.
        await consumer.start()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS)
            for record in batch.get(tp, ()):
                fold(record)
    finally:
        await stop_consumer(consumer, f"{topic} reader")


async def read_ordering_keys(settings: Settings, partition: int) -> PartitionKeys:
    keys = PartitionKeys()
    await read_partition(
        settings, settings.ordering_topic, partition, lambda r: keys.fold(r.key, r.value, r.offset)
    )
    return keys


async def read_parked(settings: Settings, partition: int) -> ParkIndex:
    index = ParkIndex()
    await read_partition(settings, settings.parking_topic, partition, index.fold)
    return index


class OffsetReader:
    """Reads given records of a topic by offset, with one consumer for the process."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        # One read at a time: the consumer has one assignment and one position.
        self._lock = asyncio.Lock()

    async def read(self, partition: int, offsets: list[int]) -> list[ConsumerRecord]:
        """The records at `offsets` (ascending) that still exist, in order."""
        tp = TopicPartition(self._topic, partition)
        wanted = set(offsets)
        found: list[ConsumerRecord] = []
        async with self._lock:
            if self._consumer is None:
                self._consumer = await self._start()
            consumer = self._consumer
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, offsets[0])
            last = offsets[-1] + 1
            # The end offset may leave out a write already acknowledged: the test broker's stays
            # behind the last of concurrent writes until the next one (1658 of 3600 reads just
            # after an acknowledgement), though a fetch returns it. Capped at that end, a held
            # copy written a moment before was read as gone and its delivery passed over: the
            # key's later events went first, and the copy, never deleted, was delivered last by
            # the partition's next owner. Past the end, records are fetched for a while.
            deadline = None if end >= last else asyncio.get_running_loop().time() + _PAST_END_WITHIN
            while (position := await consumer.position(tp)) < last:
                # No record past the last one wanted is made an object: a fetch holds up to a
                # partition's worth of other endpoints' copies.
                batch = await consumer.getmany(
                    tp, timeout_ms=_FETCH_TIMEOUT_MS, max_records=last - position
                )
                found += [r for r in batch.get(tp, ()) if r.offset in wanted]
                now = asyncio.get_running_loop().time()
                if not batch and deadline is not None and now >= deadline:
                    break  # not there: gone
            # Or the consumer goes on fetching the partition past the read, for nobody.
            consumer.pause(tp)
        return found

    async def _start(self) -> AIOKafkaConsumer:
        """A started consumer, kept only once started. A read cancelled while it connects
        (a held delivery read back, its partition revoked) left a consumer without its
        fetcher, on which every later read of the process failed: the keys whose held
        deliveries it read back stopped for good."""
        consumer = _consumer(self._settings)
        try:
            await consumer.start()
        except BaseException:
            await stop_consumer(consumer, f"{self._topic} reader")
            raise
        return consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await stop_consumer(self._consumer, f"{self._topic} reader")
            self._consumer = None
