"""The retry tiers: hold each record until it is due, then make its next attempt.

One consumer group reads every tier topic (`<prefix>.<wait>`). Records of a tier are produced
with about the same wait, so each partition is close to ordered by due time. Records fetched
from a partition wait in a small buffer, in offset order; when the head is not due, the
partition is paused (polling goes on, so the consumer stays in its group) and the poll
timeout is cut to wake at the head's due time. Nothing is dispatched before it is due: the
comparison is against the wall clock, whose time the due times were computed in.

A dispatched record is tracked in its partition's FIFO like an event record and committed
once its attempt and what follows are durable. Buffered records are not in the FIFO yet:
they all come after the commit point, and are read again after a restart or a revoke.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Final

import msgspec
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.engine.group_loop import POLL_TIMEOUT_MS, Partition, PartitionLoop
from service.config import Settings
from service.delivery.pool import DeliveryJob, DeliveryPool, Lookup
from service.delivery.record import decode, due_at_ms
from service.observability import metrics
from service.retries.policy import RetrySchedule

log = structlog.get_logger("switchboard.retries")

# A due record is dispatched within this of its due time, but never before it.
_MIN_POLL_MS: Final = 1


class RetryConsumer(PartitionLoop):
    def __init__(
        self,
        settings: Settings,
        *,
        schedule: RetrySchedule,
        pool: DeliveryPool,
        lookup: Lookup,
        producer: AIOKafkaProducer,
    ) -> None:
        super().__init__(
            settings,
            producer=producer,
            topics=schedule.topics(),
            group_id=f"{settings.group_id}.retry",
            role="retries",
        )
        self._schedule = schedule
        self._pool = pool
        self._lookup = lookup
        # Fetched, not yet due: (due time in ms, record), in offset order, per partition.
        self._waiting: dict[TopicPartition, deque[tuple[int, ConsumerRecord]]] = {}
        # Per partition: the due time (ms) of each dispatched record not yet finished.
        self._due: dict[TopicPartition, dict[int, int]] = {}

    # Hooks

    def _handle(
        self, tp: TopicPartition, partition: Partition, records: list[ConsumerRecord]
    ) -> None:
        waiting = self._waiting.setdefault(tp, deque())
        for record in records:
            waiting.append((due_at_ms(record.headers), record))

    def _after_poll(self) -> None:
        now_ms = int(time.time() * 1000)
        for tp, waiting in self._waiting.items():
            partition = self._partitions.get(tp)
            if partition is None:
                continue
            while waiting and waiting[0][0] <= now_ms:
                due_ms, record = waiting.popleft()
                self._dispatch(tp, partition, record, due_ms)

    def _held(self, tp: TopicPartition) -> bool:
        return bool(self._waiting.get(tp))

    def _poll_timeout_ms(self) -> int:
        heads = [w[0][0] for w in self._waiting.values() if w]
        if not heads:
            return POLL_TIMEOUT_MS
        wait = min(heads) - int(time.time() * 1000)
        return max(_MIN_POLL_MS, min(POLL_TIMEOUT_MS, wait))

    def _forget(self, tp: TopicPartition) -> None:
        self._waiting.pop(tp, None)
        self._due.pop(tp, None)
        tier = self._schedule.tier_of_topic(tp.topic)
        for gauge in (metrics.RETRY_OLDEST_PENDING_AGE, metrics.RETRY_OVERDUE):
            gauge.labels(tier).set(0)

    # Dispatch

    def _dispatch(
        self, tp: TopicPartition, partition: Partition, record: ConsumerRecord, due_ms: int
    ) -> None:
        offset = record.offset
        partition.offsets.add(offset, record.timestamp)
        try:
            pending = decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Only this service writes here; a record it cannot read is a bug or a stranger's
            # write. Quarantined with its reason, so the tier keeps moving and nothing is lost.
            metrics.INTERNAL_RECORDS_INVALID.labels("retry").inc()
            log.error("retry_record_invalid",  # noqa: TRY400 - the traceback is ours, not news topic=tp.topic, partition=tp.partition,
                      offset=offset, error=str(exc))  # fmt: skip
            self._track_task(
                tp, partition, offset, self._quarantine(tp, record, "bad_retry_record", str(exc))
            )
            return
        due = self._due.setdefault(tp, {})
        due[offset] = due_ms

        def done() -> None:
            due.pop(offset, None)
            self._record_done(partition, offset)

        event = pending.event.event()
        sub = self._lookup(pending.subscription_id)
        job = DeliveryJob(
            self._pool,
            event,
            pending.subscription_id,
            sub,
            done,
            origin=pending.origin,
            attempts=pending.attempts,
            first_attempt_at=pending.first_attempt_at,
            replay_of=pending.replay_of,
        )
        job.last_error = pending.last_error
        self._track_jobs(partition, offset, [job])
        if sub is None:
            self._pool.followup.give_up(job, "subscription_deleted")
        else:
            self._pool.enqueue(job, sub)

    def _update_partition_metrics(self) -> None:
        super()._update_partition_metrics()
        now = time.time()
        oldest: dict[str, float] = {}
        overdue: dict[str, float] = {}
        for tp, p in self._partitions.items():
            tier = self._schedule.tier_of_topic(tp.topic)
            head = p.offsets.oldest_pending_timestamp_ms()
            waiting = self._waiting.get(tp)
            if head is None and waiting:
                head = waiting[0][1].timestamp
            age = 0.0 if head is None else max(0.0, now - head / 1000)
            oldest[tier] = max(oldest.get(tier, 0.0), age)
            dues = list(self._due.get(tp, {}).values())
            if waiting:
                dues.append(waiting[0][0])
            late = max((now - d / 1000 for d in dues), default=0.0)
            overdue[tier] = max(overdue.get(tier, 0.0), late, 0.0)
        for tier, age in oldest.items():
            metrics.RETRY_OLDEST_PENDING_AGE.labels(tier).set(age)
        for tier, late in overdue.items():
            metrics.RETRY_OVERDUE.labels(tier).set(late)
