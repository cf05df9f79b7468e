"""Produce until acknowledged: the one way every writer of this service writes to Kafka.

A broker error is retried with backoff, for as long as the caller waits: the records that
depend on the write (their partition's commit, an API call's answer) wait with it, and
nothing is lost. `MessageSizeTooLargeError` is the caller's, since retrying cannot make a
record smaller. Cancelling the caller (revoke, shutdown, an API timeout) stops the retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple, TypeVar

import structlog
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from consumers.engine.contract import Producer, RecordBatch
from consumers.engine.partitioner import KeyPartitioner
from service.observability import metrics

log = structlog.get_logger("switchboard.produce")

# Retries back off up to this: a broker away for minutes costs one attempt per half minute.
MAX_PRODUCE_BACKOFF: Final = 30.0
# The first retry of a refused write waits this long; later ones back off from it.
FIRST_BACKOFF: Final = 0.5

T = TypeVar("T")


async def until_acknowledged(
    write: Callable[[], Awaitable[T]], role: str, *, retry_fatal: bool = True
) -> T:
    """Run a Kafka write until the broker acknowledges it; return what the write returned.

    `retry_fatal=False` raises errors the broker marks as not retriable (authorization, a
    closed producer) at once: for a caller that can answer with the error, an API request,
    rather than a record whose commit may wait for an operator to fix the cause."""
    backoff = FIRST_BACKOFF
    while True:
        try:
            return await write()
        except MessageSizeTooLargeError:
            raise
        except KafkaError as err:
            if not retry_fatal and not err.retriable:
                raise
            metrics.KAFKA_PRODUCE_ERRORS.labels(role).inc()
            log.warning("produce_failed", role=role, error=repr(err), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_PRODUCE_BACKOFF)


async def produce(
    producer: Producer,
    topic: str,
    role: str,
    *,
    value: bytes | None,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
    retry_fatal: bool = True,
) -> Any:
    """Produce one record until acknowledged; returns its RecordMetadata (topic, partition,
    offset), which a reader of the topic can wait for to read its own write."""
    return await until_acknowledged(
        lambda: producer.send_and_wait(
            topic, value=value, key=key, headers=headers, partition=partition
        ),
        role,
        retry_fatal=retry_fatal,
    )


class Write(NamedTuple):
    """One record for `produce_many` or `send_batched`."""

    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


class Written(NamedTuple):
    """Where a record was written: its partition and offset."""

    topic: str
    partition: int
    offset: int


class Sent(NamedTuple):
    """Records given to the producer together: their indexes among the writes, in order, and
    the acknowledgement of all of them (the first one's metadata: the others follow it)."""

    indexes: list[int]
    ack: asyncio.Future[Any]

    def written(self) -> list[Written]:
        """Once acknowledged: where each of its records was written, in its order."""
        md = self.ack.result()
        return [Written(md.topic, md.partition, md.offset + n) for n in range(len(self.indexes))]


# The partition of a keyed write, as the producer's own partitioner picks it (clients.py).
_PARTITIONER: Final = KeyPartitioner()


def _append(batch: RecordBatch, write: Write) -> bool:
    added = batch.append(key=write.key, value=write.value, timestamp=None,
                         headers=write.headers or [])  # fmt: skip
    return added is not None


async def send_batched(
    producer: Producer, topic: str, writes: Sequence[Write], indexes: Sequence[int]
) -> tuple[list[Sent], dict[int, KafkaError]]:
    """Give the writes at `indexes` to the producer as one batch per partition (more when one
    fills), in their order: a future per batch. `send` costs a coroutine, a partitioner call
    and a future per record: 32 against 9 ms of CPU per 1000 records (bench/produce.py).
    Returns the batches, and the writes the producer refused at once (its buffer full past
    its timeout, metadata unknown), with their errors."""
    try:
        partitions = sorted(await producer.partitions_for(topic))
    except KafkaError as err:
        return [], dict.fromkeys(indexes, err)
    by_partition: dict[int, list[int]] = {}
    for i in indexes:
        write = writes[i]
        partition = write.partition
        if partition is None:
            partition = _PARTITIONER(write.key, partitions, partitions)
        by_partition.setdefault(partition, []).append(i)
    sent: list[Sent] = []
    refused: dict[int, KafkaError] = {}

    async def send(taken: list[int], batch: RecordBatch | None, partition: int) -> None:
        """A batch, or (None) the one write larger than a batch, alone, as `send` takes it."""
        try:
            if batch is None:
                write = writes[taken[0]]
                ack = await producer.send(topic, value=write.value, key=write.key,
                                          headers=write.headers, partition=partition)  # fmt: skip
            else:
                ack = await producer.send_batch(batch, topic, partition=partition)
        except KafkaError as err:  # MessageSizeTooLargeError among them: the caller's
            refused.update(dict.fromkeys(taken, err))
        else:
            sent.append(Sent(taken, ack))

    for partition, members in by_partition.items():
        batch, taken = producer.create_batch(), list[int]()
        for i in members:
            if not _append(batch, writes[i]):
                if taken:
                    await send(taken, batch, partition)
                batch, taken = producer.create_batch(), []
                if not _append(batch, writes[i]):
                    await send([i], None, partition)
                    continue
            taken.append(i)
        if taken:
            await send(taken, batch, partition)
    return sent, refused


async def produce_many(
    producer: Producer, topic: str, role: str, writes: Sequence[Write]
) -> list[Written | MessageSizeTooLargeError]:
    """Produce records together until each is acknowledged, in the caller's task, in batches
    (`send_batched`) whose acknowledgements are awaited together. Those refused are produced
    again together after a backoff, as `produce` does; a batch the broker refuses as too large
    is produced again a record at a time, to tell which of its records is. In the writes'
    order: where each record was written, or the MessageSizeTooLargeError the caller settles."""
    results: list[Any] = [None] * len(writes)
    pending = list(range(len(writes)))
    backoff = FIRST_BACKOFF
    while pending:
        batches, errors = await send_batched(producer, topic, writes, pending)
        await asyncio.gather(*(b.ack for b in batches), return_exceptions=True)
        alone: list[int] = []
        for batch in batches:
            error = batch.ack.exception()  # a cancelled acknowledgement raises: the caller's
            if error is None:
                for i, where in zip(batch.indexes, batch.written(), strict=True):
                    results[i] = where
            elif isinstance(error, MessageSizeTooLargeError) and len(batch.indexes) > 1:
                alone += batch.indexes
            elif isinstance(error, KafkaError):
                errors.update(dict.fromkeys(batch.indexes, error))
            else:
                raise error
        failed = [i for i, e in errors.items() if not isinstance(e, MessageSizeTooLargeError)]
        for i, error in errors.items():
            if isinstance(error, MessageSizeTooLargeError):
                results[i] = error
        if failed:
            metrics.KAFKA_PRODUCE_ERRORS.labels(role).inc(len(failed))
            log.warning("produce_failed", role=role, error=repr(errors[failed[0]]),
                        records=len(failed), retry_in=backoff)  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_PRODUCE_BACKOFF)
        # Each record of a batch refused as too large goes alone: batches of one.
        pending = sorted(failed)
        for i in alone:
            results[i] = (await produce_many(producer, topic, role, [writes[i]]))[0]
    return results
