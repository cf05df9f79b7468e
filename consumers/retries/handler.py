"""The retry tiers' handler: hold each record until it is due, then make its next attempt.

One consumer group reads every tier topic (`<prefix>.<wait>`). Records of a tier are produced
with about the same wait, so each partition is close to ordered by due time. Records fetched
from a partition wait here in offset order with their tokens; while the head is not due the
partition is held (polling goes on, so the consumer stays in its group) and the loop is
asked to wake at the head's due time. Nothing is dispatched before it is due: the comparison
is against the wall clock, whose time the due times were computed in.

A dispatched record becomes a job in the delivery pool, finished once its attempt and what
follows are durable. Held records are given up uncommitted when their partition is revoked,
and read again by its next owner.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Token
from consumers.engine.tasks import finish_when_done
from consumers.events.quarantine import Quarantine
from service.delivery.job import DeliveryJob, JobQueue
from service.delivery.pool import FindSubscription
from service.delivery.record import decode, due_at_ms
from service.observability import metrics
from service.retries.policy import RetrySchedule

log = structlog.get_logger("switchboard.retries")

ROLE = "retries"
# The tiers' gauges are refreshed at most this often; they are read by a scrape every 15 s+.
_GAUGE_INTERVAL: Final = 1.0


class _Held:
    __slots__ = ("due_ms", "record", "token")

    def __init__(self, due_ms: int, record: ConsumerRecord, token: Token) -> None:
        self.due_ms = due_ms
        self.record = record
        self.token = token


class RetryHandler:
    def __init__(
        self,
        *,
        schedule: RetrySchedule,
        pool: JobQueue,
        find: FindSubscription,
        quarantine: Quarantine,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._schedule = schedule
        self._pool = pool
        self._find = find
        self._quarantine = quarantine
        self._clock = clock
        # Fetched, not yet due, in offset order, per partition.
        self._held: dict[TopicPartition, deque[_Held]] = {}
        # Dispatched and not finished, for the gauges: offset -> (due ms, timestamp ms).
        self._running: dict[TopicPartition, dict[int, tuple[int, int]]] = {}
        self._gauges_at = 0.0

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self._held.setdefault(tp, deque()).append(_Held(due_at_ms(record.headers), record, token))

    def poll(self) -> None:
        now_ms = int(self._clock() * 1000)
        for tp, held in self._held.items():
            while held and held[0].due_ms <= now_ms:
                self._dispatch(tp, held.popleft())
        if self._clock() - self._gauges_at >= _GAUGE_INTERVAL:
            self._update_gauges()

    def held(self, tp: TopicPartition) -> bool:
        return bool(self._held.get(tp))

    def wake_at(self) -> float | None:
        heads = [h[0].due_ms for h in self._held.values() if h]
        return min(heads) / 1000 if heads else None

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            for held in self._held.pop(tp, ()):
                held.token.abandon()
            self._running.pop(tp, None)
            tier = self._schedule.tier_of_topic(tp.topic)
            for gauge in (metrics.RETRY_OLDEST_PENDING_AGE, metrics.RETRY_OVERDUE):
                gauge.labels(tier).set(0)

    def _dispatch(self, tp: TopicPartition, held: _Held) -> None:
        record, token = held.record, held.token
        try:
            delivery = decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Only this service writes here; a record it cannot read is a bug or a stranger's
            # write. Quarantined with its reason, so the tier keeps moving and nothing is lost.
            metrics.INTERNAL_RECORDS_INVALID.labels("retry").inc()
            log.error("retry_record_invalid", topic=tp.topic, partition=tp.partition,  # noqa: TRY400 - not an exception of ours
                      offset=record.offset, error=str(exc))  # fmt: skip
            finish_when_done(token, self._quarantine.put(record, "bad_retry_record", str(exc)),
                             ROLE)  # fmt: skip
            return
        running = self._running.setdefault(tp, {})
        running[record.offset] = (held.due_ms, record.timestamp)

        def done() -> None:
            running.pop(record.offset, None)
            token.done()

        job = DeliveryJob(
            delivery.event.event(),
            delivery.subscription_id,
            self._find(delivery.subscription_id),
            done,
            origin=delivery.origin,
            attempts=delivery.attempts,
            first_attempt_at=delivery.first_attempt_at,
            last_error=delivery.last_error,
            replay_of=delivery.replay_of,
        )
        token.attach(job)
        self._pool.submit(job)

    def _update_gauges(self) -> None:
        """Per tier: the age of the oldest record held or running, and how late it is."""
        now = self._clock()
        self._gauges_at = now
        oldest: dict[str, float] = {}
        overdue: dict[str, float] = {}
        for tp in {*self._held, *self._running}:
            tier = self._schedule.tier_of_topic(tp.topic)
            held = self._held.get(tp)
            running = self._running.get(tp, {}).values()
            dues = [due for due, _ in running]
            stamps = [stamp for _, stamp in running]
            if held:
                dues.append(held[0].due_ms)
                stamps.append(held[0].record.timestamp)
            age = max((now - ms / 1000 for ms in stamps), default=0.0)
            late = max((now - ms / 1000 for ms in dues), default=0.0)
            oldest[tier] = max(oldest.get(tier, 0.0), age, 0.0)
            overdue[tier] = max(overdue.get(tier, 0.0), late, 0.0)
        for tier, age in oldest.items():
            metrics.RETRY_OLDEST_PENDING_AGE.labels(tier).set(age)
        for tier, late in overdue.items():
            metrics.RETRY_OVERDUE.labels(tier).set(late)
