"""A topic materialized in memory by every replica, Karapace-style.

The reader assigns itself every partition of its topic (no consumer group: each replica needs
all of it), reads from the beginning (or, for a bounded history, the last `tail` records of
each partition) and follows. `loaded` is set once it has read up to the
end offsets seen at start. `wait_for(tp, offset)` returns once the reader has applied that
record, which is how a writer reads its own writes: a client that changes something and then
reads it from the same replica sees its change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumers.engine.clients import connection_kwargs, fetch_kwargs, stop_consumer
from service.config import Settings

log = structlog.get_logger("switchboard.reader")


class TopicReader:
    def __init__(self, settings: Settings, topic: str, *, tail: int | None = None) -> None:
        self._settings = settings
        self._topic = topic
        # Read only the last `tail` records of each partition (a bounded history), not all.
        self._tail = tail
        self._consumer: AIOKafkaConsumer | None = None
        self._end_at_start: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self.loaded = asyncio.Event()

    def _apply(self, record: ConsumerRecord) -> None:
        """Fold one record into memory. Must not raise for a bad record: skip and count it."""
        raise NotImplementedError

    def _on_loaded(self) -> None:
        """Called once, when the topic has been read up to its end at start."""

    def _after_batch(self) -> None:
        """Called after each non-empty batch has been applied."""

    async def wait_for(self, tp: TopicPartition, offset: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self._positions.get(tp, 0) > offset)

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        """Return once `ready()` holds, checked after each fetch (twice a second at least)."""
        async with self._progress:
            await self._progress.wait_for(ready)

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **fetch_kwargs(self._settings),
        )
        await consumer.start()
        self._consumer = consumer
        partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            raise RuntimeError(f"topic {self._topic} does not exist")
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._end_at_start = await consumer.end_offsets(tps)
        if self._tail is not None:
            beginnings = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(beginnings[tp], self._end_at_start[tp] - self._tail))
        self._check_loaded()

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_consumer(self._consumer, self._topic)

    async def run(self) -> None:
        assert self._consumer is not None, "start() first"
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except KafkaError:
                log.exception("topic_read_failed", topic=self._topic)
                await asyncio.sleep(1)  # the broker is away; the next fetch reconnects
                continue
            for tp, records in batch.items():
                for record in records:
                    self._apply(record)
                self._positions[tp] = records[-1].offset + 1
            # Compaction and transaction markers leave gaps: the position, not the last
            # record read, says how far the reader has come.
            for tp in self._consumer.assignment():
                with contextlib.suppress(KafkaError):
                    self._positions[tp] = max(
                        self._positions.get(tp, 0), await self._consumer.position(tp)
                    )
            if batch:
                self._after_batch()
            self._check_loaded()
            async with self._progress:
                self._progress.notify_all()

    def _check_loaded(self) -> None:
        if not self.loaded.is_set() and all(
            self._positions.get(tp, 0) >= end for tp, end in self._end_at_start.items()
        ):
            self.loaded.set()
            self._on_loaded()
