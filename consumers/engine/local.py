"""An in-memory broker, consumer and producer with the shape the engine uses.

The loop and the handlers are tested against it without a Kafka broker, as arroyo tests its
strategies with its local backend: records, commits, pauses and rebalances are all plain
data a test can set and read. Rebalances are driven by the test (`LocalConsumer.reassign`)
and run in a task of their own, as aiokafka's coordinator runs them: whether the loop fetches
or not, and a `getmany` under way waits for the one in progress.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from consumers.engine.contract import RecordBatch


@dataclass(frozen=True, slots=True)
class Metadata:
    topic: str
    partition: int
    offset: int


@dataclass
class LocalBroker:
    topics: dict[str, list[list[ConsumerRecord]]] = field(default_factory=dict)
    # (group, partition) -> committed offset
    commits: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)
    clock_ms: int = 1_000_000

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self.topics.setdefault(name, [[] for _ in range(partitions)])

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> Metadata:
        parts = self.topics[topic]
        if partition is None:
            partition = hash(key) % len(parts) if key is not None else 0
        log = parts[partition]
        record = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log),
            timestamp=self.clock_ms if timestamp_ms is None else timestamp_ms,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""),
            headers=tuple(headers),
        )
        log.append(record)
        return Metadata(topic, partition, record.offset)

    def records(self, topic: str, partition: int = 0) -> list[ConsumerRecord]:
        return self.topics[topic][partition]


class LocalConsumer:
    """A `GroupConsumer` over a LocalBroker; every partition of its topics is assigned at the
    first fetch unless the test assigns otherwise. A later rebalance (`reassign`) runs in a
    task of its own, as aiokafka's coordinator runs it, whether the loop fetches or not."""

    def __init__(self, broker: LocalBroker, group_id: str, *, max_poll_records: int = 500) -> None:
        self._broker = broker
        self._group = group_id
        self._max = max_poll_records
        self._topics: list[str] = []
        self._listener: Any = None
        self._positions: dict[TopicPartition, int] = {}
        self._next_assignment: set[TopicPartition] | None = None
        self._rebalancing: asyncio.Future[None] | None = None
        self.paused: set[TopicPartition] = set()
        self.stopped = False
        self.fail_commits = False
        self.fetches = 0
        # Per partition: the fetches that included it, and the last one's unix ms.
        self.fetched: Counter[TopicPartition] = Counter()
        self._polled_ms: dict[TopicPartition, int] = {}

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    async def start(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._topics = list(topics)
        self._listener = listener
        self._next_assignment = {
            TopicPartition(t, p) for t in topics for p in range(len(self._broker.topics[t]))
        }

    def reassign(self, partitions: Iterable[TopicPartition]) -> None:
        """Rebalance now, in the background."""
        self._next_assignment = set(partitions)
        self._rebalancing = asyncio.ensure_future(self._rebalance())

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """As aiokafka's: records of `partitions` (all when none is named) not paused, once a
        rebalance under way is over."""
        self.fetches += 1
        if self._rebalancing is not None:
            await asyncio.shield(self._rebalancing)
        await self._rebalance()  # the first assignment
        return await self._records(partitions, timeout_ms)

    async def _rebalance(self) -> None:
        if self._next_assignment is not None:
            wanted, self._next_assignment = self._next_assignment, None
            revoked = sorted(set(self._positions) - wanted)
            if revoked:
                await self._listener.on_partitions_revoked(revoked)
                for tp in revoked:
                    del self._positions[tp]
                    self.paused.discard(tp)
            added = sorted(wanted - set(self._positions))
            for tp in added:
                self._positions[tp] = self._broker.commits.get((self._group, tp), 0)
            await self._listener.on_partitions_assigned(added)

    async def _records(
        self, partitions: tuple[TopicPartition, ...], timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        budget = self._max
        now_ms = int(time.time() * 1000)
        for tp, position in self._positions.items():
            if tp in self.paused or budget <= 0 or (partitions and tp not in partitions):
                continue
            self.fetched[tp] += 1
            self._polled_ms[tp] = now_ms
            log = self._broker.topics[tp.topic][tp.partition]
            batch = log[position : position + budget]
            if batch:
                out[tp] = batch
                self._positions[tp] = position + len(batch)
                budget -= len(batch)
        if not out:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return out

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commits:
            raise KafkaError("commit refused (local backend)")
        for tp, offset in offsets.items():
            self._broker.commits[(self._group, tp)] = offset

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self._broker.topics[partition.topic][partition.partition])

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        return self._polled_ms.get(partition)

    async def position(self, partition: TopicPartition) -> int:
        return self._positions[partition]

    async def stop(self) -> None:
        self.stopped = True


class LocalBatch:
    """A `RecordBatch` of the local backend: never full."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> object | None:
        self.records.append((key, value, headers))
        return len(self.records)


class LocalProducer:
    """A `Producer` over a LocalBroker; `fail_next` makes the next sends raise, as a broker
    that is away would; a value over `max_value_bytes` is refused as a broker refuses a
    record too large for it (a batch that holds one, whole). `hold` makes sends wait, as
    aiokafka's do while its batches are full, until `release` lets them through, or raises
    `error` in them, as a send that waited out its timeout does."""

    def __init__(self, broker: LocalBroker, *, max_value_bytes: int | None = None) -> None:
        self._broker = broker
        self._failures: list[BaseException] = []
        self._max_value_bytes = max_value_bytes
        self._open = asyncio.Event()
        self._open.set()
        self._release_error: BaseException | None = None
        self.sent = 0
        self.waiting = 0

    def fail_next(self, *errors: BaseException) -> None:
        self._failures.extend(errors)

    def hold(self) -> None:
        self._open.clear()

    def release(self, error: BaseException | None = None) -> None:
        self._release_error = error
        self._open.set()

    async def _wait_open(self) -> None:
        if self._open.is_set():
            return
        self.waiting += 1
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1
        if (error := self._release_error) is not None:
            self._release_error = None
            raise error

    async def send(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Metadata]:
        """Appended at once (unless held); a failure set by `fail_next` is the future's, as
        a broker's error is the acknowledgement's."""
        await self._wait_open()
        sent: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        try:
            sent.set_result(await self.send_and_wait(
                topic, value=value, key=key, partition=partition, timestamp_ms=timestamp_ms,
                headers=headers,
            ))  # fmt: skip
        except KafkaError as err:
            sent.set_exception(err)
        return sent

    async def send_and_wait(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Metadata:
        await asyncio.sleep(0)
        self._refuse([value])
        self._broker.create_topic(topic)
        self.sent += 1
        return self._broker.append(
            topic, value, key=key, partition=partition, headers=headers or (),
            timestamp_ms=timestamp_ms,
        )  # fmt: skip

    def create_batch(self) -> LocalBatch:
        return LocalBatch()

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Metadata]:
        """Appended at once, as `send`; the future holds the first record's metadata."""
        assert isinstance(batch, LocalBatch), "a batch of create_batch()"
        await asyncio.sleep(0)
        sent: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        try:
            self._refuse([value for _, value, _ in batch.records])
        except KafkaError as err:
            sent.set_exception(err)
            return sent
        self._broker.create_topic(topic)
        self.sent += len(batch.records)
        written = [
            self._broker.append(topic, value, key=key, partition=partition, headers=headers)
            for key, value, headers in batch.records
        ]
        sent.set_result(written[0])
        return sent

    async def partitions_for(self, topic: str) -> set[int]:
        self._broker.create_topic(topic)
        return set(range(len(self._broker.topics[topic])))

    def _refuse(self, values: Sequence[bytes | None]) -> None:
        if self._failures:
            raise self._failures.pop(0)
        limit = self._max_value_bytes
        if limit is not None and any(len(v or b"") > limit for v in values):
            raise MessageSizeTooLargeError()
