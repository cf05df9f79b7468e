"""What follows an attempt: a retry tier, the dead letters, endpoint health, ops events.

The delivery pool calls one of `attempted`, `give_up` or `defer` per job. Whatever must be
durable before the job's source record may be committed (the retry record, the dead letter,
a subscription disabled by a 410) is produced in a task held by the job, which finishes the
job only once the broker has acknowledged. If producing fails it is retried; the job, and so
its source record, waits. Cancelling the job (revoke, shutdown) cancels the task: the record
stays uncommitted and is read again, and its webhook-id makes the repeat recognisable.

Ops events and health records are notifications, produced in the background: they never
hold a record back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from consumers.engine.group_loop import produce, until_acknowledged
from consumers.subscriptions.table import SubscriptionTable
from service.config import Settings
from service.delivery.circuit import Transition
from service.delivery.outcomes import AttemptResult
from service.delivery.pool import DeliveryJob
from service.delivery.record import (
    EventRecord,
    LastError,
    PendingDelivery,
    dead_letter_headers,
    encode,
    retry_headers,
)
from service.events.envelope import rfc3339
from service.observability import metrics
from service.retries.policy import GiveUp, Retry, RetrySchedule, parse_retry_after, tier_name
from service.subscriptions.model import Health, Subscription, disabled

log = structlog.get_logger("switchboard.handoff")

OPS_TYPES: Final = ("endpoint.failing", "endpoint.recovered", "endpoint.disabled",
                    "delivery.exhausted")  # fmt: skip
_EXCERPT_CHARS: Final = 1024

_DELIVERED: Final = metrics.DELIVERIES.labels("delivered")
_DEAD_LETTERED: Final = metrics.DELIVERIES.labels("dead_lettered")
_OPS_ENCODER: Final = msgspec.json.Encoder()


class Handoff:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer,
        schedule: RetrySchedule,
        table: SubscriptionTable,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._schedule = schedule
        self._table = table
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()
        # Subscriptions with a health write under way: one write per change, not per attempt.
        self._health_writes: set[str] = set()

    async def close(self) -> None:
        """Give background notifications a moment, then drop what is left (it is advisory)."""
        if self._background:
            await asyncio.wait(self._background, timeout=2)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # Followup

    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None:
        sub = job.sub
        assert sub is not None, "an attempted job has its subscription"
        now = self._clock()
        if result.ok:
            _DELIVERED.inc()
            job.finish()
            if self._table.health(sub.id) is not None and sub.id not in self._health_writes:
                self._in_background(self._recovered(sub))
            return
        job.last_error = LastError(
            outcome=result.outcome.value,
            status=result.status,
            error=result.error,
            body_excerpt=result.body_excerpt.decode("utf-8", "replace")[:_EXCERPT_CHARS],
            at=rfc3339(now),
        )
        health = self._table.health(sub.id)
        opened = transition is Transition.OPENED
        if opened and health is None and sub.id not in self._health_writes:
            self._in_background(self._failing(sub, now, result))
        if result.status == 410:
            job.task = asyncio.create_task(
                self._disable_then_dead_letter(job, "endpoint answered 410 Gone", "gone")
            )
            return
        if health is not None and now - health.failing_since >= (
            self._settings.auto_disable_after_seconds
        ):
            reason = f"failing without a success since {rfc3339(health.failing_since)}"
            job.task = asyncio.create_task(
                self._disable_then_dead_letter(job, reason, "subscription_disabled")
            )
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
        self._follow(job, step, now, cause="failure")

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        job.task = asyncio.create_task(self._dead_letter(job, reason))

    def defer(self, job: DeliveryJob, until: float) -> None:
        now = self._clock()
        if job.first_attempt_at is None:
            job.first_attempt_at = now
        retry = self._schedule.deferral(until=until, now=now)
        late = now + retry.wait > job.first_attempt_at + self._window(job.sub)
        step = GiveUp("retry_window") if late else retry
        self._follow(job, step, now, cause="circuit_open")

    def _window(self, sub: Subscription | None) -> float:
        own = sub.retry_window_seconds if sub is not None else None
        return own or self._settings.retry_window_seconds

    def _follow(self, job: DeliveryJob, step: Retry | GiveUp, now: float, *, cause: str) -> None:
        if isinstance(step, Retry):
            job.task = asyncio.create_task(self._to_tier(job, step, now, cause))
        else:
            job.task = asyncio.create_task(self._dead_letter(job, step.reason))

    # Durable steps (each finishes its job once acknowledged)

    async def _to_tier(self, job: DeliveryJob, step: Retry, now: float, cause: str) -> None:
        pending = _pending(job, due_at=now + step.wait)
        try:
            await produce(
                self._producer, self._schedule.topic(step.tier), "retry",
                value=encode(pending), key=job.sub_id.encode(), headers=retry_headers(pending),
            )  # fmt: skip
        except MessageSizeTooLargeError:
            await self._dead_letter(job, "too_large")
            return
        metrics.RETRIES_SCHEDULED.labels(tier_name(step.tier), cause).inc()
        job.finish()

    async def _dead_letter(self, job: DeliveryJob, reason: str) -> None:
        now = self._clock()
        pending = msgspec.structs.replace(
            _pending(job, due_at=0.0), reason=reason, dead_lettered_at=now
        )
        value = encode(pending)
        headers = dead_letter_headers(pending, self._settings.group_id)
        try:
            await produce(
                self._producer, self._settings.dead_letter_topic, "dead_letter",
                value=value, key=job.sub_id.encode(), headers=headers,
            )  # fmt: skip
        except MessageSizeTooLargeError:
            # The event itself cannot be kept: keep where it came from, so it can be found.
            stripped = msgspec.structs.replace(
                pending,
                event=msgspec.structs.replace(pending.event, data=msgspec.Raw(b"{}")),
                reason="too_large",
            )
            await produce(
                self._producer, self._settings.dead_letter_topic, "dead_letter",
                value=encode(stripped), key=job.sub_id.encode(),
                headers=[*dead_letter_headers(stripped, self._settings.group_id),
                         ("switchboard.value_dropped", b"too large")],
            )  # fmt: skip
            reason = "too_large"
        metrics.DEAD_LETTERS.labels(reason).inc()
        _DEAD_LETTERED.inc()
        log.warning("dead_lettered", event_id=job.event.id, subscription_id=job.sub_id,
                    reason=reason, attempts=job.attempts)  # fmt: skip
        job.finish()
        if reason in ("exhausted", "retry_window"):
            details = {"event_id": job.event.id, "event_type": job.event.type,
                       "reason": reason, "attempts": job.attempts}  # fmt: skip
            self._in_background(
                self.publish("delivery.exhausted", job.sub_id, job.event.tenant_id, details)
            )

    async def _disable_then_dead_letter(
        self, job: DeliveryJob, why: str, dead_letter_reason: str
    ) -> None:
        current = self._table.get(job.sub_id)
        if current is not None and current.enabled:
            await until_acknowledged(lambda: self._table.put(disabled(current, why)), "table")
            log.warning("subscription_disabled", subscription_id=job.sub_id, reason=why)
            self._in_background(
                self.publish("endpoint.disabled", current.id, current.tenant_id, {"reason": why})
            )
        await self._dead_letter(job, dead_letter_reason)

    # Health and ops (background)

    async def _failing(self, sub: Subscription, now: float, result: AttemptResult) -> None:
        self._health_writes.add(sub.id)
        try:
            error = result.error or f"HTTP {result.status}"
            await until_acknowledged(
                lambda: self._table.put_health(sub.id, Health(failing_since=now, last_error=error)),
                "table",
            )
        finally:
            self._health_writes.discard(sub.id)
        await self.publish(
            "endpoint.failing", sub.id, sub.tenant_id, {"since": rfc3339(now), "last_error": error}
        )

    async def _recovered(self, sub: Subscription) -> None:
        self._health_writes.add(sub.id)
        try:
            await until_acknowledged(lambda: self._table.put_health(sub.id, None), "table")
        finally:
            self._health_writes.discard(sub.id)
        await self.publish("endpoint.recovered", sub.id, sub.tenant_id, {})

    async def publish(
        self, kind: str, sub_id: str, tenant_id: str, data: dict[str, object]
    ) -> None:
        """An ops event, as a CloudEvent like the ones this service reads."""
        assert kind in OPS_TYPES, kind
        value = _OPS_ENCODER.encode(
            {
                "specversion": "1.0",
                "id": "op_" + secrets.token_hex(12),
                "source": "switchboard",
                "type": kind,
                "tenantid": tenant_id,
                "time": rfc3339(self._clock()),
                "data": {"subscription_id": sub_id, **data},
            }
        )
        await produce(self._producer, self._settings.ops_topic, "ops", value=value,
                      key=sub_id.encode())  # fmt: skip
        metrics.OPS_EVENTS.labels(kind).inc()
        log.info("ops_event", type=kind, subscription_id=sub_id)

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _pending(job: DeliveryJob, *, due_at: float) -> PendingDelivery:
    return PendingDelivery(
        subscription_id=job.sub_id,
        event=EventRecord.of(job.event),
        origin=job.origin,
        attempts=job.attempts,
        first_attempt_at=job.first_attempt_at,
        due_at=due_at,
        last_error=job.last_error,
        replay_of=job.replay_of,
    )
