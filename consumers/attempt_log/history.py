"""The delivery log on Kafka: attempts published to `switchboard.attempts`, and read back.

`AttemptPublisher` takes one record per attempt from the delivery pool. It never holds a
delivery back: records wait in a bounded buffer that one task drains, writing whatever has
gathered as one Kafka record (a JSON array of up to `MAX_PER_RECORD` attempts). One record per
attempt cost about a tenth of the service's CPU in the benchmark, most of it in the producer's
per-record path; batches make it a few percent. If the topic does not accept them for long,
the oldest are dropped and counted (the log is for people, the metrics are the ledger).

`AttemptHistory` reads the last `attempts_retained` records of each partition at start and
follows the topic, keeping at most `attempts_retained` in memory with an index per
subscription and per event. Every replica reads the same topic, so the log answers the same
on any of them, a moment after the attempt.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Iterable
from typing import Final

import msgspec
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from consumers.engine.reader import TopicReader
from service.attempt_log.record import DECODER, ENCODER, AttemptRecord
from service.config import Settings
from service.observability import metrics

log = structlog.get_logger("switchboard.attempts")

# Attempts waiting for the producer; at ~10k attempts/s this is a second of broker outage.
MAX_BUFFERED: Final = 10_000
# Attempts per Kafka record: ~400 bytes each, so a record stays far below the 1 MiB default
# and a reader decodes a fetch in milliseconds.
MAX_PER_RECORD: Final = 100
_PRODUCED: Final = metrics.ATTEMPT_LOG_RECORDS.labels("produced")
_DROPPED: Final = metrics.ATTEMPT_LOG_RECORDS.labels("dropped")


class AttemptPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._buffer: deque[AttemptRecord] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: AttemptRecord) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.popleft()
            _DROPPED.inc()
        self._buffer.append(record)
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="attempt-publisher")

    async def close(self) -> None:
        """Hand what is buffered to the producer (its stop flushes it), then stop."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(2):
                await self._send_buffered()
        except (TimeoutError, KafkaError):
            _DROPPED.inc(len(self._buffer))

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self._send_buffered()
            except KafkaError as exc:
                log.warning("attempt_log_produce_failed", error=repr(exc))
                await asyncio.sleep(1)  # the broker is away; the buffer bounds what waits
                self._ready.set()

    async def _send_buffered(self) -> None:
        buffer = self._buffer
        while buffer:
            batch = [buffer[i] for i in range(min(len(buffer), MAX_PER_RECORD))]
            # send() only appends to the producer's batch; delivery is not awaited here.
            sent = await self._producer.send(self._topic, value=ENCODER.encode(batch))
            sent.add_done_callback(functools.partial(_count_sent, len(batch)))
            for _ in batch:
                buffer.popleft()


def _count_sent(count: int, sent: asyncio.Future[object]) -> None:
    if sent.cancelled() or sent.exception() is not None:
        _DROPPED.inc(count)
    else:
        _PRODUCED.inc(count)


class AttemptHistory(TopicReader):
    def __init__(self, settings: Settings) -> None:
        retained = settings.attempts_retained
        # A restart reads back this many records per partition: at 1..MAX_PER_RECORD attempts
        # each, a tenth of the retained count refills the history at high rates without
        # decoding millions of attempts at start, and still holds thousands at low rates.
        super().__init__(settings, settings.attempts_topic, tail=max(1000, retained // 10))
        self._retained = retained
        self._all: deque[AttemptRecord] = deque()
        self._by_sub: dict[str, deque[AttemptRecord]] = {}
        # Lists, not deques: one per event, mostly of one or two attempts, and a deque costs
        # over 600 bytes empty.
        self._by_event: dict[str, list[AttemptRecord]] = {}

    def for_subscription(self, sub_id: str) -> Iterable[AttemptRecord]:
        return self._by_sub.get(sub_id, ())

    def for_event(self, event_id: str) -> Iterable[AttemptRecord]:
        return self._by_event.get(event_id, ())

    @property
    def oldest(self) -> float | None:
        """When the oldest attempt held was made: how far back the history reaches."""
        return self._all[0].at if self._all else None

    def _apply(self, record: ConsumerRecord) -> None:
        try:
            attempts = DECODER.decode(record.value or b"")
        except msgspec.DecodeError as exc:
            metrics.INTERNAL_RECORDS_INVALID.labels("attempts").inc()
            log.warning("attempt_record_skipped", offset=record.offset, reason=str(exc))
            return
        if self._retained == 0:
            return
        for attempt in attempts:
            self._all.append(attempt)
            self._by_sub.setdefault(attempt.subscription_id, deque()).append(attempt)
            self._by_event.setdefault(attempt.event_id, []).append(attempt)
            if len(self._all) > self._retained:
                self._evict(self._all.popleft())

    def _evict(self, old: AttemptRecord) -> None:
        # Records enter every index in the same order, so the oldest overall is the oldest
        # of its subscription and of its event.
        by_sub = self._by_sub[old.subscription_id]
        by_sub.popleft()
        if not by_sub:
            del self._by_sub[old.subscription_id]
        by_event = self._by_event[old.event_id]
        del by_event[0]
        if not by_event:
            del self._by_event[old.event_id]
