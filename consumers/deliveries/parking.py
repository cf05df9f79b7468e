"""Parking: an endpoint's deliveries beyond its horizon, kept in Kafka by endpoint, so that
the partition it shares with other endpoints moves on.

The horizon (service/delivery/horizon.py) holds a partition while its next record's endpoint
has a horizon's worth queued. That costs nothing when the endpoint is alone on the partition,
but an endpoint behind it on the same partition waits as long. So when holding would let
another endpoint of the partition run dry, the record is parked instead: copied to the
parking topic (compacted, co-partitioned with the deliveries topic), keyed by its
subscription and its source coordinates, and its source record finished. From then on the
endpoint's records are parked in turn, behind it, until its parked deliveries have all been
taken up again: the endpoint's order is kept.

The owner keeps an index of the parked deliveries (their offsets, never their contents) and
reads them back by offset, a batch at a time, as the endpoint has room: they enter the
delivery stage as if read from their source, each with a token whose `done` deletes the
parked copy (a tombstone). A new owner reads its partitions of the parking topic before it
takes a record there; a source record read again that is still parked is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from consumers.deliveries.park_index import UNWRITTEN, ParkIndex, Source
from consumers.deliveries.partition_state import PartitionStates
from consumers.engine.contract import Producer, Token
from consumers.engine.produce import Write, produce, produce_many
from service.observability import metrics

log = structlog.get_logger("switchboard.parking")

ROLE: Final = "parking"
# At most this many parked deliveries of one endpoint are read back at once: one fetch's
# worth, and a bound on what one endpoint brings into memory.
BATCH: Final = 500
_ENCODER: Final = msgspec.json.Encoder()

ReadAt = Callable[[int, list[int]], Awaitable[list[ConsumerRecord]]]


def park_key(sub_id: str, source: Source) -> bytes:
    return _ENCODER.encode(("p", sub_id, *source))


class _Park(NamedTuple):
    write: Write
    sub_id: str
    source: Source
    token: Token


class Parking:
    def __init__(
        self,
        *,
        producer: Producer,
        topic: str,
        load: Callable[[int], Coroutine[Any, Any, ParkIndex]],
        read_at: ReadAt,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._read_at = read_at
        self._states = PartitionStates(load, "parked", clock)
        # Per partition: the parked deliveries taken up and not finished, and the endpoints
        # being read back (one read at a time per endpoint keeps its order).
        self._taken: dict[int, set[Source]] = {}
        self._reading: dict[tuple[int, str], asyncio.Task[None]] = {}
        # Per partition: copies to write, and the task writing them.
        self._pending: dict[int, list[_Park]] = {}
        self._writing: dict[int, asyncio.Task[None]] = {}

    async def close(self) -> None:
        await self._states.close()

    def load(self, partition: int) -> None:
        """Read the partition's parked deliveries now (it was assigned here)."""
        self._states.load(partition)

    def index(self, partition: int) -> ParkIndex:
        """The partition's parked deliveries; raises Rejected while they are being read."""
        return self._states.get(partition)

    def park(self, tp: TopicPartition, record: ConsumerRecord, sub_id: str, token: Token) -> None:
        """Park the record; its token is finished once the copy is acknowledged. In the index
        at once, so that the endpoint's next record is parked behind it."""
        index = self._states.get(tp.partition)
        source = (record.topic, record.offset)
        index.add(sub_id, source, UNWRITTEN)
        metrics.DELIVERIES_PARKED.inc()
        write = Write(record.value, park_key(sub_id, source), list(record.headers), tp.partition)
        self._pending.setdefault(tp.partition, []).append(_Park(write, sub_id, source, token))
        if tp.partition not in self._writing:
            task = asyncio.create_task(self._write(tp.partition, index))
            self._writing[tp.partition] = task
            task.add_done_callback(functools.partial(self._written, tp.partition))

    async def _write(self, partition: int, index: ParkIndex) -> None:
        """Write the partition's parked copies, a batch at a time, in one task: those parked
        while a batch is written go in the next."""
        while parks := self._pending.pop(partition, None):
            try:
                results = await produce_many(
                    self._producer, self._topic, ROLE, [park.write for park in parks]
                )
            except Exception:  # a bug of ours (Kafka errors are retried): said, and the
                # records finished anyway, as finish_when_done does, or the partition stalls
                log.exception("park_write_failed", parked=len(parks))
                metrics.HANDLER_ERRORS.labels(ROLE).inc()
                for park in parks:
                    park.token.done()
                continue
            for park, md in zip(parks, results, strict=True):
                if isinstance(md, MessageSizeTooLargeError):
                    # Not bigger than its source record, so only a parking topic configured
                    # smaller than the deliveries topic does this: said, as a bug of ours, and
                    # out of the index, so that the endpoint's other parked deliveries go on.
                    log.error("park_failed", subscription_id=park.sub_id, error=repr(md))
                    index.remove(park.sub_id, park.source)
                elif self._states.peek(partition) is index and index.contains(
                    park.sub_id, park.source
                ):
                    index.add(park.sub_id, park.source, md.offset)
                park.token.done()

    def _written(self, partition: int, task: asyncio.Task[None]) -> None:
        if self._writing.get(partition) is task:
            del self._writing[partition]
        _log_failure(task)
        if partition in self._pending and not task.cancelled():
            # Parked after the task's last look (or it failed): written by a new task.
            parks = self._pending[partition]
            index = self._states.peek(partition)
            if index is not None and parks:
                task = asyncio.create_task(self._write(partition, index))
                self._writing[partition] = task
                task.add_done_callback(functools.partial(self._written, partition))

    def poll(
        self, room: Callable[[str], int], take: Callable[[ConsumerRecord, Token], bool]
    ) -> None:
        """Read parked deliveries back for endpoints that have room; `take` offers each to
        the delivery stage (False: no room after all, it stays parked)."""
        for partition, index in self._states.items():
            for sub_id in index.subs():
                key = (partition, sub_id)
                if key in self._reading:
                    continue
                n = min(BATCH, room(sub_id))
                if n <= 0:
                    continue
                task = asyncio.create_task(self._read_back(partition, index, sub_id, n, take))
                self._reading[key] = task
                task.add_done_callback(functools.partial(self._read, key))
        metrics.PARKED_DELIVERIES.set(sum(i.count() for _, i in self._states.items()))

    def _read(self, key: tuple[int, str], task: asyncio.Task[None]) -> None:
        if self._reading.get(key) is task:
            del self._reading[key]
        _log_failure(task)

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        for p in {tp.partition for tp in tps}:
            self._states.forget(p)
            self._taken.pop(p, None)
            self._pending.pop(p, None)  # not written: their records are read again
            for key in [k for k in self._reading if k[0] == p]:
                self._reading.pop(key).cancel()

    async def _read_back(
        self, partition: int, index: ParkIndex, sub_id: str, n: int,
        take: Callable[[ConsumerRecord, Token], bool],
    ) -> None:  # fmt: skip
        taken = self._taken.setdefault(partition, set())
        due = [(s, at) for s, at in self._next(index, sub_id, taken, n)]
        if not due:
            return
        records = await self._read_at(partition, sorted(at for _, at in due))
        if self._states.peek(partition) is not index:
            return  # revoked meanwhile
        by_offset = {r.offset: r for r in records}
        for source, at in due:
            parked = by_offset.get(at)
            if parked is None:
                continue  # deleted meanwhile (a tombstone of its own delivery, read late)
            record, token = self._unparked(partition, index, sub_id, source, parked)
            taken.add(source)
            if not take(record, token):
                taken.discard(source)
                return

    @staticmethod
    def _next(
        index: ParkIndex, sub_id: str, taken: set[Source], n: int
    ) -> Iterator[tuple[Source, int]]:
        """The endpoint's next parked deliveries not taken up yet, whose copy is written."""
        count = 0
        for source, at in index.queue(sub_id):
            if at == UNWRITTEN:
                return  # not acknowledged yet: it and what follows wait for the next poll
            if source in taken:
                continue
            yield source, at
            count += 1
            if count == n:
                return

    def _unparked(
        self, partition: int, index: ParkIndex, sub_id: str, source: Source,
        parked: ConsumerRecord,
    ) -> tuple[ConsumerRecord, Token]:  # fmt: skip
        """The parked delivery as the record it was, and a token that deletes the copy once
        the delivery is finished (or, abandoned, leaves it parked)."""
        topic, offset = source
        record = ConsumerRecord(
            topic=topic, partition=partition, offset=offset, timestamp=parked.timestamp,
            timestamp_type=0, key=sub_id.encode(), value=parked.value, checksum=None,
            serialized_key_size=len(sub_id), serialized_value_size=len(parked.value or b""),
            headers=parked.headers,
        )  # fmt: skip
        taken = self._taken.setdefault(partition, set())

        def done(_: Token) -> None:
            async def unpark() -> None:
                await produce(self._producer, self._topic, ROLE, key=park_key(sub_id, source),
                              value=None, partition=partition)  # fmt: skip
                index.remove(sub_id, source)
                taken.discard(source)

            task = asyncio.create_task(unpark())
            task.add_done_callback(_log_failure)

        token = Token(TopicPartition(topic, partition), offset, parked.timestamp,
                      on_done=done, on_abandon=lambda _: taken.discard(source))  # fmt: skip
        return record, token


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("unpark_failed", error=repr(task.exception()))
