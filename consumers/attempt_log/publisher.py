"""The delivery log's writer: attempts published to `switchboard.attempts`, never blocking.

`AttemptPublisher` takes one record per attempt from the delivery pool. It never holds a
delivery back: records wait in a bounded buffer that one task drains, writing whatever has
gathered as one Kafka record (a JSON array of up to `MAX_PER_RECORD` attempts). One record per
attempt cost about a tenth of the service's CPU in the benchmark, most of it in the producer's
per-record path; batches make it a few percent. If the topic does not accept them for long,
the oldest are dropped and counted (the log is for people, the metrics are the ledger).

Routing decisions (service/routing/decision.py) take the same path in batches of their own,
marked with a header, so that a reader tells the two apart without decoding.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import Final, TypeVar

import structlog
from aiokafka.errors import KafkaError

from consumers.engine.contract import Producer
from service.attempt_log.record import ENCODER, AttemptRecord
from service.observability import metrics
from service.routing.decision import KIND_HEADER, ROUTING_KIND, RoutingDecision

log = structlog.get_logger("switchboard.attempts")

# Attempts waiting for the producer; at ~10k attempts/s this is a second of broker outage.
MAX_BUFFERED: Final = 10_000
# Attempts per Kafka record: ~400 bytes each, so a record stays far below the 1 MiB default
# and a reader decodes a fetch in milliseconds.
MAX_PER_RECORD: Final = 100
_PRODUCED: Final = metrics.ATTEMPT_LOG_RECORDS.labels("produced")
_DROPPED: Final = metrics.ATTEMPT_LOG_RECORDS.labels("dropped")
_ROUTING_HEADERS: Final = [(KIND_HEADER, ROUTING_KIND)]

Entry = TypeVar("Entry", AttemptRecord, RoutingDecision)


class AttemptPublisher:
    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._buffer: deque[AttemptRecord] = deque()
        self._routing: deque[RoutingDecision] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: AttemptRecord) -> None:
        self._buffer.append(record)
        _drop_oldest(self._buffer)
        self._ready.set()

    def add_routing(self, decision: RoutingDecision) -> None:
        self._routing.append(decision)
        _drop_oldest(self._routing)
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
            _DROPPED.inc(len(self._buffer) + len(self._routing))

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
        await self._drain(self._routing, _ROUTING_HEADERS)
        await self._drain(self._buffer, None)

    async def _drain(self, buffer: deque[Entry], headers: list[tuple[str, bytes]] | None) -> None:
        while buffer:
            # Taken out before the send, which waits while the producer's batches are full
            # (a broker away): meanwhile `add` drops the oldest of what is left, never these.
            batch = [buffer.popleft() for _ in range(min(len(buffer), MAX_PER_RECORD))]
            # send() only appends to the producer's batch; delivery is not awaited here.
            try:
                sent = await self._producer.send(
                    self._topic, value=ENCODER.encode(batch), headers=headers
                )
            except BaseException:
                # Not taken (a send that raised or was cancelled appended nothing): back in
                # front, for the next try or for close(), within the buffer's bound.
                buffer.extendleft(reversed(batch))
                _drop_oldest(buffer)
                raise
            sent.add_done_callback(functools.partial(_count_sent, len(batch)))


def _drop_oldest(buffer: deque[Entry]) -> None:
    if (excess := len(buffer) - MAX_BUFFERED) > 0:
        for _ in range(excess):
            buffer.popleft()
        _DROPPED.inc(excess)


def _count_sent(count: int, sent: asyncio.Future[object]) -> None:
    if sent.cancelled() or sent.exception() is not None:
        _DROPPED.inc(count)
    else:
        _PRODUCED.inc(count)
