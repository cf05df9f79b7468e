"""What follows an attempt, made durable on Kafka: a retry tier, or the dead letters.

Whatever must be durable before the job's source record may be committed (the retry record,
the dead letter, a subscription disabled by a 410) is produced in a step held by the job,
which finishes the job only once the broker has acknowledged. If producing fails it is
retried; the job, and so its source record, waits. Cancelling the job (its record abandoned)
cancels the step: the record stays uncommitted and is read again, and its webhook-id makes
the repeat recognisable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import msgspec
import structlog
from aiokafka.errors import MessageSizeTooLargeError

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from service.config import Settings
from service.dead_letters.model import dead_letter_headers
from service.delivery.circuit import Transition
from service.delivery.job import DeliveryJob, Ending
from service.delivery.outcomes import AttemptResult, Outcome
from service.delivery.record import (
    DeliveryRecord,
    EventRecord,
    LastError,
    encode,
    retry_headers,
)
from service.events.envelope import rfc3339
from service.observability import metrics
from service.observability.tracing import Attributes, Tracing, carrying
from service.retries.health import EndpointHealth
from service.retries.ops import OpsEvents
from service.retries.policy import GiveUp, Retry, RetrySchedule, parse_retry_after, tier_name
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.retries")

_EXCERPT_CHARS: Final = 1024
_DELIVERED: Final = metrics.DELIVERIES.labels("delivered")
_DEAD_LETTERED: Final = metrics.DELIVERIES.labels("dead_lettered")


class KafkaFollowup:
    """The `Followup` of the running service (`service/delivery/followup.py`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        producer: Producer,
        schedule: RetrySchedule,
        health: EndpointHealth,
        ops: OpsEvents,
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._schedule = schedule
        self._health = health
        self._ops = ops
        self._clock = clock
        self._tracing = tracing

    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None:
        sub = job.sub
        assert sub is not None, "an attempted job has its subscription"
        now = self._clock()
        if result.ok:
            _DELIVERED.inc()
            job.finish(Ending.DELIVERED)
            self._health.note_success(sub)
            return
        job.failed(
            LastError(
                outcome=result.outcome.value,
                status=result.status,
                error=result.error,
                body_excerpt=result.body_excerpt.decode("utf-8", "replace")[:_EXCERPT_CHARS],
                at=rfc3339(now),
            )
        )
        if transition is Transition.OPENED:
            self._health.note_opened(sub, now, result)
        if result.status == 410:
            self._give_up(job, "gone", self._disable_then_dead_letter(
                job, "endpoint answered 410 Gone", "gone"))  # fmt: skip
            return
        since = self._health.failing_since(sub.id)
        if since is not None and now - since >= self._settings.auto_disable_after_seconds:
            reason = f"failing without a success since {rfc3339(since)}"
            work = self._disable_then_dead_letter(job, reason, "subscription_disabled")
            self._give_up(job, "subscription_disabled", work)
            return
        step = self._schedule.after_failure(
            failed_attempts=job.attempts,
            first_attempt_at=job.first_attempt_at or now,
            now=now,
            max_attempts=sub.max_attempts or self._schedule.default_max_attempts,
            window=self._window(sub),
            retry_after=parse_retry_after(result.retry_after, now=now),
            retry_after_cap=self._settings.retry_after_max_seconds,
        )
        cause = "circuit_open" if result.outcome is Outcome.CIRCUIT_OPEN else "failure"
        self._follow(job, step, now, cause=cause)

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        self._give_up(job, reason, self._dead_letter(job, reason))

    def _window(self, sub: Subscription | None) -> float:
        own = sub.retry_window_seconds if sub is not None else None
        return own or self._settings.retry_window_seconds

    def _follow(self, job: DeliveryJob, step: Retry | GiveUp, now: float, *, cause: str) -> None:
        if isinstance(step, Retry):
            topic = self._schedule.topic(step.tier)
            work = self._to_tier(job, now + step.wait, step, cause)
            self._step(job, work, topic, {"switchboard.handoff": "retry",
                                          "switchboard.retry.tier": tier_name(step.tier),
                                          "switchboard.retry.wait_seconds": step.wait})  # fmt: skip
        else:
            self._give_up(job, step.reason, self._dead_letter(job, step.reason))

    def _give_up(self, job: DeliveryJob, reason: str, work: Coroutine[Any, Any, None]) -> None:
        attributes: Attributes = {
            "switchboard.handoff": "dead_letter",
            "switchboard.dead_letter.reason": reason,
        }
        self._step(job, work, self._settings.dead_letter_topic, attributes)

    def _step(
        self, job: DeliveryJob, work: Coroutine[Any, Any, None], topic: str, attributes: Attributes
    ) -> None:
        """Run the durable step in a task the job holds; with tracing on, inside a handoff
        span under the job's latest span, which the record it writes carries."""
        if self._tracing is not None:
            work = self._tracing.handoff(job.trace_parent, topic, attributes, work)
        job.hand_on(asyncio.create_task(work))

    # Durable steps (each finishes its job once acknowledged)

    async def _to_tier(self, job: DeliveryJob, due_at: float, step: Retry, cause: str) -> None:
        record = self._record(job, due_at=due_at)
        try:
            await produce(
                self._producer, self._schedule.topic(step.tier), "retry",
                value=encode(record), key=job.sub_id.encode(), headers=retry_headers(record),
            )  # fmt: skip
        except MessageSizeTooLargeError:
            await self._dead_letter(job, "too_large")
            return
        metrics.RETRIES_SCHEDULED.labels(tier_name(step.tier), cause).inc()
        job.finish(Ending.RETRYING)

    async def _dead_letter(self, job: DeliveryJob, reason: str) -> None:
        record = msgspec.structs.replace(
            self._record(job, due_at=0.0),
            reason=reason,
            dead_lettered_at=self._clock(),
        )
        topic, group = self._settings.dead_letter_topic, self._settings.group_id
        try:
            await produce(
                self._producer, topic, "dead_letter",
                value=encode(record), key=job.sub_id.encode(),
                headers=dead_letter_headers(record, group),
            )  # fmt: skip
        except MessageSizeTooLargeError:
            # The event itself cannot be kept: keep where it came from, so it can be found.
            stripped = msgspec.structs.replace(
                record,
                event=msgspec.structs.replace(record.event, data=msgspec.Raw(b"{}")),
                reason="too_large",
            )
            await produce(
                self._producer, topic, "dead_letter",
                value=encode(stripped), key=job.sub_id.encode(),
                headers=[*dead_letter_headers(stripped, group),
                         ("switchboard.value_dropped", b"too large")],
            )  # fmt: skip
            reason = "too_large"
        metrics.DEAD_LETTERS.labels(reason).inc()
        _DEAD_LETTERED.inc()
        trace = job.event.trace
        log.warning("dead_lettered", event_id=job.event.id, subscription_id=job.sub_id,
                    reason=reason, attempts=job.attempts,
                    trace_id=trace.trace_id if trace is not None else None)  # fmt: skip
        job.finish(Ending.DEAD_LETTERED)
        if reason in ("exhausted", "retry_window"):
            details = {"event_id": job.event.id, "event_type": job.event.type,
                       "reason": reason, "attempts": job.attempts}  # fmt: skip
            self._ops.notify("delivery.exhausted", job.sub_id, job.event.tenant_id, details)

    def _record(self, job: DeliveryJob, *, due_at: float) -> DeliveryRecord:
        event = EventRecord.of(job.event)
        if self._tracing is not None:
            event = carrying(event)  # the retry's spans, or a replay's, hang under this step
        return DeliveryRecord(
            subscription_id=job.sub_id,
            event=event,
            origin=job.origin,
            attempts=job.attempts,
            sent=job.sent,
            first_attempt_at=job.first_attempt_at,
            due_at=due_at,
            last_error=job.last_error,
            replay_of=job.replay_of,
            sequence=job.sequence,
        )

    async def _disable_then_dead_letter(
        self, job: DeliveryJob, why: str, dead_letter_reason: str
    ) -> None:
        await self._health.disable(job.sub_id, why)
        await self._dead_letter(job, dead_letter_reason)
