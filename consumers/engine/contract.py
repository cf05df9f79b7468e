"""The contract between the group loop and the handlers plugged into it.

The loop (`GroupLoop`) owns offsets, the count of records in flight, backpressure, commits
and rebalances. A handler owns what a record means. For each record it reads, the loop calls
`handler.submit(record, token)`; the handler says when the record is finished by calling
`token.done()`, at once or later, from any callback. A record is committed only once it and
every record before it in its partition are done.

`token.attach(work)` ties work started for the record (a task, a delivery job) to it: when
the loop abandons the record (its partition revoked past the grace period, or shutdown), the
work is cancelled and the record stays uncommitted, to be read again by the partition's next
owner. A handler may also abandon a token itself (`token.abandon()`), for records it holds
without working on them.

A handler that cannot take a record yet raises `Rejected` from `submit` (arroyo's
MessageRejected): the record is not in flight, the loop keeps it and the rest of its
partition's fetch, pauses the partition, and offers it again at `retry_at` (or at the next
iteration). This is how the retry tiers wait for a record's due time without holding a slot
of the in-flight cap.

Between fetches the loop asks the handler which partitions to keep paused (`held`) and when
it wants to run again (`wake_at`); it calls `poll` after every fetch, so that the handler
can start work that has come due. None of these may wait for the network: `submit` and
`poll` only start work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import ConsumerRecord, TopicPartition


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Rejected(Exception):
    """Raised by `Handler.submit`: not now; offer the record again from `retry_at`."""

    def __init__(self, retry_at: float | None = None) -> None:
        super().__init__("not now")
        self.retry_at = retry_at


class Token:
    """The completion of one record: done (committable), or abandoned (read again later)."""

    __slots__ = ("_on_abandon", "_on_done", "_open", "_work", "offset", "timestamp_ms", "tp")

    def __init__(
        self,
        tp: TopicPartition,
        offset: int,
        timestamp_ms: int,
        *,
        on_done: Callable[[Token], None],
        on_abandon: Callable[[Token], None],
    ) -> None:
        self.tp = tp
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self._on_done = on_done
        self._on_abandon = on_abandon
        self._work: list[Cancellable] = []
        self._open = True

    @property
    def open(self) -> bool:
        """Neither done nor abandoned."""
        return self._open

    def attach(self, work: Cancellable) -> None:
        """Cancel `work` if the record is abandoned; work attached to a closed token is
        cancelled at once."""
        if self._open:
            self._work.append(work)
        else:
            work.cancel()

    def done(self) -> None:
        """The record is finished; later calls (and calls after abandon) do nothing."""
        if self._open:
            self._open = False
            self._work.clear()
            self._on_done(self)

    def abandon(self) -> list[Cancellable]:
        """Give the record up uncommitted and cancel its work; it is read again later.
        Returns the work cancelled, for a caller that waits for cancelled tasks to end."""
        if not self._open:
            return []
        self._open = False
        work, self._work = self._work, []
        for item in work:
            item.cancel()
        self._on_abandon(self)
        return work


class Handler(Protocol):
    """What plugs into the group loop (see the module's docstring)."""

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        """Take one record; call `token.done()` once it is finished. Raise `Rejected` to be
        offered it again later."""
        ...

    def poll(self) -> None:
        """After every fetch, whatever it returned: start what has come due. Not called while
        the member is fenced (consumers/engine/fence.py)."""
        ...

    def held(self, tp: TopicPartition) -> bool:
        """Whether the partition stays paused whatever the backpressure."""
        ...

    def wake_at(self) -> float | None:
        """The unix time by which `poll` should run again, or None for the usual interval."""
        ...

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        """The partitions are this member's now, and where each is read from is known: start
        reading what it keeps about them."""
        ...

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        """The partitions are leaving: abandon the tokens held without work, forget them."""
        ...


class GroupConsumer(Protocol):
    """What the loop uses of a Kafka consumer: `AIOKafkaConsumer`, or the local backend."""

    async def start(self) -> None: ...
    def subscribe(self, topics: list[str], listener: Any) -> None: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def last_poll_timestamp(self, partition: TopicPartition) -> int | None: ...
    async def position(self, partition: TopicPartition) -> int: ...
    async def stop(self) -> None: ...


class Producer(Protocol):
    """What handlers use of a Kafka producer: `AIOKafkaProducer`, or the local backend."""

    async def send(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Enqueue the record; the future of its acknowledgement."""
        ...

    async def send_and_wait(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any: ...

    def create_batch(self) -> RecordBatch:
        """An empty batch of records for one partition, for `send_batch`."""
        ...

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        """Enqueue the batch; the future of its acknowledgement (its first record's
        metadata: the others follow it, offset by offset)."""
        ...

    async def partitions_for(self, topic: str) -> set[int]: ...


class RecordBatch(Protocol):
    """A batch being filled: aiokafka's `BatchBuilder`, or the local backend's."""

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> object | None:
        """None when the batch is full."""
        ...
