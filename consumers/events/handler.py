"""The event consumer: decode → route → first attempt, for the records of the event topics.

A record is finished when each matching subscription's first attempt is done and what
follows it is durable: delivered, or handed to a retry tier or the dead letters (the
`Followup`'s produce acknowledged), or when the record itself is in the quarantine topic.
Its deliveries are jobs in the delivery pool's per-endpoint queues, not tasks of their own:
a record costs a closure, not a coroutine. The loop, its commits and its backpressure are
`PartitionLoop`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.engine.group_loop import Cancellable, Partition, PartitionLoop
from consumers.lookups.handler import BadRequest, Lookups, reply_headers
from service.config import Settings
from service.delivery.pool import DeliveryJob, DeliveryPool
from service.delivery.record import LastError, Origin
from service.events.envelope import Event, InvalidEvent, decode_event, rfc3339
from service.observability import metrics
from service.routing.router import Router
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.consumer")


class EventConsumer(PartitionLoop):
    def __init__(
        self,
        settings: Settings,
        *,
        router: Router,
        pool: DeliveryPool,
        producer: AIOKafkaProducer,
    ) -> None:
        super().__init__(
            settings,
            producer=producer,
            topics=list(settings.event_topics),
            group_id=settings.group_id,
            role="events",
        )
        self._router = router
        self._pool = pool
        self._lookups = Lookups(settings, router=router, pool=pool, producer=producer)

    def _handle(
        self, tp: TopicPartition, partition: Partition, records: list[ConsumerRecord]
    ) -> None:
        for record in records:
            self._submit(tp, partition, record)

    def _submit(self, tp: TopicPartition, partition: Partition, record: ConsumerRecord) -> None:
        offsets = partition.offsets
        offsets.add(record.offset, record.timestamp)
        try:
            event = decode_event(
                record.value,
                record.headers,
                record_timestamp_ms=record.timestamp,
                max_bytes=self._settings.max_event_bytes,
            )
        except InvalidEvent as exc:
            metrics.EVENTS_INVALID.labels(exc.reason).inc()
            log.warning("event_invalid", topic=tp.topic, partition=tp.partition,
                        offset=record.offset, reason=exc.reason, detail=exc.detail)  # fmt: skip
            self._track_task(
                tp, partition, record.offset, self._quarantine(tp, record, exc.reason, exc.detail)
            )
            return
        try:
            request = reply_headers(record.headers, self._settings)
        except BadRequest as exc:
            metrics.EVENTS_INVALID.labels("bad_reply_headers").inc()
            log.warning("lookup_request_invalid", topic=tp.topic, partition=tp.partition,
                        offset=record.offset, detail=str(exc))  # fmt: skip
            self._track_task(
                tp, partition, record.offset,
                self._quarantine(tp, record, "bad_reply_headers", str(exc)),
            )  # fmt: skip
            return
        if request is not None:
            # Answered now, outside the per-endpoint queues: a caller is waiting on the line.
            answer = self._lookups.answer(event, *request, produced_at_ms=record.timestamp)
            self._track_task(tp, partition, record.offset, answer)
            return
        subs, refused = self._router.route(event)
        if not subs and not refused:
            metrics.EVENTS_UNROUTED.inc()
            offsets.finish(record.offset)
            return
        offset = record.offset
        remaining = len(subs) + len(refused)

        def one_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self._record_done(partition, offset)

        origin = Origin(tp.topic, tp.partition, offset)
        jobs: list[Cancellable] = []
        self._track_jobs(partition, offset, jobs)
        for sub in subs:
            jobs.append(self._pool.submit(event, sub, one_done, origin=origin))
        for sub, error in refused:
            jobs.append(self._schema_refused(event, sub, error, one_done, origin))

    def _schema_refused(
        self, event: Event, sub: Subscription, error: str, on_done: Callable[[], None],
        origin: Origin,
    ) -> DeliveryJob:  # fmt: skip
        """A strict subscription refused the event: a dead letter, which an operator can
        still replay (a replay is delivered without the schema check)."""
        job = DeliveryJob(self._pool, event, sub.id, sub, on_done, origin=origin)
        job.last_error = LastError(outcome="schema_mismatch", error=error, at=rfc3339(time.time()))
        self._pool.followup.give_up(job, "schema_mismatch")
        return job
