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

from consumers.engine.contract import Producer
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
    """One record for `produce_many`."""

    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


async def produce_many(
    producer: Producer, topic: str, role: str, writes: Sequence[Write]
) -> list[Any | MessageSizeTooLargeError]:
    """Produce records together until each is acknowledged, in the caller's task: each is
    enqueued at once, so that they share the producer's batches, then their acknowledgements
    are awaited together (a gather of coroutines would start a task per record). Those that
    failed are produced again together after a backoff, as `produce` does. In the writes'
    order: each record's RecordMetadata, or the MessageSizeTooLargeError the caller settles."""
    results: list[Any] = [None] * len(writes)
    pending = list(range(len(writes)))
    backoff = FIRST_BACKOFF
    while True:
        sent: list[asyncio.Future[Any] | BaseException] = []
        for i in pending:
            write = writes[i]
            try:
                sent.append(await producer.send(
                    topic, value=write.value, key=write.key, headers=write.headers,
                    partition=write.partition,
                ))  # fmt: skip
            except KafkaError as err:
                sent.append(err)
        futures = [f for f in sent if isinstance(f, asyncio.Future)]
        await asyncio.gather(*futures, return_exceptions=True)  # futures: no task is started
        failed: list[int] = []
        first_error: BaseException | None = None
        for i, outcome in zip(pending, sent, strict=True):
            if isinstance(outcome, asyncio.Future) and outcome.exception() is None:
                results[i] = outcome.result()
                continue
            error = outcome if isinstance(outcome, BaseException) else outcome.exception()
            if isinstance(error, MessageSizeTooLargeError):
                results[i] = error
            elif isinstance(error, KafkaError):
                failed.append(i)
                first_error = first_error or error
            else:
                assert error is not None, "a failed write"
                raise error
        if not failed:
            return results
        metrics.KAFKA_PRODUCE_ERRORS.labels(role).inc(len(failed))
        log.warning("produce_failed", role=role, error=repr(first_error), records=len(failed),
                    retry_in=backoff)  # fmt: skip
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_PRODUCE_BACKOFF)
        pending = failed
