"""The hop to the delivery stage: one delivery record per matched subscription.

Keyed by the subscription's id, so that every delivery to a subscription, first attempts and
retries alike, lands in the partition of the deliveries topic (and of each retry tier) that
one replica owns (consumers/deliveries/handler.py). The event record is finished once all of
its delivery records are acknowledged: from then on they are the deliveries' durable copy.

`enqueue` is the common path: no task per event. The events are queued in the order they
were read, and one writer task hands their records to the producer (whose batches they share)
and returns; each acknowledgement settles its event by a callback. A task per event, and
the chain of coroutines under it, cost more than the producer's own work on this path.
`hand_off`, a coroutine, is for the callers that await it inside a span or beside a dead
letter.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import structlog
from aiokafka.errors import MessageSizeTooLargeError

from consumers.engine.contract import Producer, Token
from consumers.engine.produce import FIRST_BACKOFF, Write, produce, produce_many, send_batched
from service.delivery.record import DeliveryRecord, EventRecord, Origin, encode, retry_headers
from service.events.envelope import Event
from service.observability import metrics
from service.observability.tracing import Tracing, carrying

log = structlog.get_logger("switchboard.handoff")

ROLE: Final = "handoff"

# Called once every record of an event is acknowledged, with the subscriptions whose record
# the broker refused as too large (the caller's to settle).
Settle = Callable[[list[str]], None]


class _Event:
    """An event's records on their way: settled when the last one is acknowledged."""

    __slots__ = ("left", "settle", "sub_ids", "token", "too_large", "writes")

    def __init__(self, token: Token, sub_ids: list[str], writes: list[Write], settle: Settle):
        self.token = token
        self.sub_ids = sub_ids
        self.writes = writes
        self.settle = settle
        self.left = len(writes)
        self.too_large: list[str] = []

    def written(self, i: int, *, too_large: bool = False) -> None:
        if too_large:
            self.too_large.append(self.sub_ids[i])
        self.left -= 1
        if self.left == 0 and self.token.open:
            self.settle(self.too_large)


class Handoff:
    def __init__(self, producer: Producer, topic: str, tracing: Tracing | None = None) -> None:
        self._producer = producer
        self.topic = topic
        self._tracing = tracing
        self._queue: deque[_Event] = deque()
        self._writer: asyncio.Task[None] | None = None

    def enqueue(
        self, event: Event, sub_ids: list[str], origin: Origin, token: Token, settle: Settle
    ) -> None:
        """Hand the event's records off without a task of its own; `settle` is called once
        each is acknowledged, unless the record is abandoned first."""
        self._queue.append(_Event(token, sub_ids, self._writes(event, sub_ids, origin), settle))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
            self._writer.add_done_callback(self._written)

    async def hand_off(self, event: Event, sub_ids: Sequence[str], origin: Origin) -> list[str]:
        """Produce the event's delivery records until acknowledged; the ids of the
        subscriptions whose record is too large for the broker (the caller's to settle)."""
        results = await produce_many(
            self._producer, self.topic, ROLE, self._writes(event, sub_ids, origin)
        )
        return [
            sub_id
            for sub_id, result in zip(sub_ids, results, strict=True)
            if isinstance(result, MessageSizeTooLargeError)
        ]

    def _writes(self, event: Event, sub_ids: Sequence[str], origin: Origin) -> list[Write]:
        copy = EventRecord.of(event)
        if self._tracing is not None:
            copy = carrying(copy)  # the delivery stage's spans hang under the handoff span
        records = [
            DeliveryRecord(subscription_id=s, event=copy, origin=origin, attempts=0)
            for s in sub_ids
        ]
        return [Write(encode(r), r.subscription_id.encode(), retry_headers(r)) for r in records]

    async def _write(self) -> None:
        """Give the queued events' records to the producer, in the order they were read, in
        batches (`send_batched`): all that queued while the previous ones were given. That
        only appends (it waits when the producer's buffer is full), so this returns once the
        queue is empty, and the next event starts a new writer."""
        while self._queue:
            events = [e for e in self._queue if e.token.open]  # abandoned: read again elsewhere
            self._queue.clear()
            try:
                await self._send(events)
            except Exception:  # a bug of ours (broker errors are retried): said, and the
                # records finished anyway, as finish_when_done does, or their partition stalls
                log.exception("handoff_failed", events=len(events))
                metrics.HANDLER_ERRORS.labels(ROLE).inc()
                for pending in events:
                    pending.token.done()

    async def _send(self, events: list[_Event]) -> None:
        owners = [(pending, i) for pending in events for i in range(len(pending.writes))]
        writes = [pending.writes[i] for pending, i in owners]
        batches, refused = await send_batched(self._producer, self.topic, writes,
                                              range(len(writes)))  # fmt: skip
        for j, error in refused.items():
            self._settle(*owners[j], error)
        for batch in batches:
            records = [owners[j] for j in batch.indexes]
            batch.ack.add_done_callback(functools.partial(self._acknowledged, records))

    def _acknowledged(self, records: list[tuple[_Event, int]], ack: asyncio.Future[object]) -> None:
        # The producer closing cancels it: produced again while the records wait.
        error = asyncio.CancelledError() if ack.cancelled() else ack.exception()
        if isinstance(error, MessageSizeTooLargeError) and len(records) > 1:
            # Which record is too large: each is produced again on its own.
            for pending, i in records:
                self._retry(pending, i, error)
            return
        for pending, i in records:
            self._settle(pending, i, error)

    def _settle(self, pending: _Event, i: int, error: BaseException | None) -> None:
        if error is None:
            pending.written(i)
        elif isinstance(error, MessageSizeTooLargeError):
            pending.written(i, too_large=True)
        else:
            self._retry(pending, i, error)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writer = None
        if self._queue and not task.cancelled():  # enqueued after its last look
            self._writer = asyncio.create_task(self._write())
            self._writer.add_done_callback(self._written)

    async def _again(self, write: Write) -> None:
        await asyncio.sleep(FIRST_BACKOFF)  # as `produce` waits after a refusal
        await produce(self._producer, self.topic, ROLE, value=write.value, key=write.key,
                      headers=write.headers)  # fmt: skip

    def _retry(self, pending: _Event, i: int, error: BaseException) -> None:
        """Produce one record again until acknowledged, in a task of the record's: abandoning
        the record stops it."""
        if not pending.token.open:
            return
        metrics.KAFKA_PRODUCE_ERRORS.labels(ROLE).inc()
        log.warning("produce_failed", role=ROLE, error=repr(error), retry="now")
        retry = asyncio.create_task(self._again(pending.writes[i]))
        pending.token.attach(retry)

        def done(task: asyncio.Task[object]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None and not isinstance(exc, MessageSizeTooLargeError):
                # A bug of ours (broker errors are retried): said, and the record finished
                # anyway, as finish_when_done does, or its partition stalls.
                metrics.HANDLER_ERRORS.labels(ROLE).inc()
                log.error("handoff_failed", error=repr(exc))
            pending.written(i, too_large=isinstance(exc, MessageSizeTooLargeError))

        retry.add_done_callback(done)
