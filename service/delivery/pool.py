"""The delivery pool: one attempt of one job, to its endpoint, within the endpoint's limits.

Each endpoint (subscription) has its own FIFO of jobs, drained by at most `max_in_flight`
workers that are started when jobs arrive and end when the queue is empty. A slow or dead
endpoint therefore holds only its own workers and queue; deliveries to every other endpoint go
on at their own pace, and nothing is ordered per Kafka partition.

The pool makes one attempt per job and hands the job to its `Followup`, which finishes it
once what follows is durable. Before each attempt the subscription is read again (an edit
applies to queued and retried deliveries) and its circuit breaker is asked: an open circuit
puts the job off without a request. A cancelled job (its record abandoned) never finishes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from aiolimiter import AsyncLimiter

from service.attempt_log.record import AttemptSink, attempt_record
from service.delivery.circuit import CircuitBreaker, CircuitSettings, State, new_breaker
from service.delivery.endpoint import EndpointSettings
from service.delivery.followup import FinishOnly, Followup
from service.delivery.horizon import Pace, drains_in, refill, wait_before_more
from service.delivery.job import DeliveryJob
from service.delivery.netguard import AddressPolicy
from service.delivery.outcomes import AttemptResult, Outcome
from service.delivery.request import Prepared, prepare
from service.delivery.sender import Sender
from service.delivery.signing import message_id
from service.events.envelope import Event, rfc3339
from service.observability import metrics
from service.observability.tracing import Tracing, attempt_result, context_of
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.delivery")

# Reads a subscription as it is now, by id: None once deleted.
FindSubscription = Callable[[str], Subscription | None]


class _Endpoint:
    """Per-subscription queue, workers and limits; survives edits of the subscription."""

    __slots__ = ("breaker", "limiter", "pace", "queue", "refusals", "settings", "workers")

    def __init__(
        self, settings: EndpointSettings, circuit: CircuitSettings | None, now: float
    ) -> None:
        self.queue: deque[DeliveryJob] = deque()
        self.pace = Pace(now)
        self.workers = 0
        self.breaker = new_breaker(circuit) if circuit is not None else None
        # Paces the attempts counted as failed while the circuit is open (CIRCUIT_OPEN_PACE).
        self.refusals = (
            AsyncLimiter(circuit.circuit_open_pace, 1.0) if circuit is not None else None
        )
        self.settings = settings
        self.limiter = _limiter(settings.sub)

    @property
    def open_pace(self) -> float | None:
        """The pace of its attempts counted as failed while its circuit is not closed."""
        if self.breaker is None or self.refusals is None or self.breaker.state is State.CLOSED:
            return None
        return self.refusals.max_rate

    def reconfigure(self, settings: EndpointSettings) -> None:
        # An edit that keeps the rate limit keeps the bucket: no fresh burst for a URL change.
        if settings.sub.rate_limit != self.settings.sub.rate_limit:
            self.limiter = _limiter(settings.sub)
        self.settings = settings


def _limiter(sub: Subscription) -> AsyncLimiter | None:
    rate = sub.rate_limit
    if rate is None:
        return None
    return AsyncLimiter(rate.capacity(), rate.capacity() / rate.per_second)


class DeliveryPool:
    def __init__(
        self,
        *,
        sender: Sender,
        policy: AddressPolicy,
        find: FindSubscription | None = None,
        circuit: CircuitSettings | None = None,
        followup: Followup | None = None,
        attempt_sink: AttemptSink | None = None,
        correlate: Callable[[Event], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
        log_successes: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self._sender = sender
        self._policy = policy
        # Reads the subscription again before each attempt, so that an edit (a new URL, a
        # disabled endpoint) applies to deliveries already queued or waiting to retry.
        self._find = find
        self._circuit = circuit
        self._followup: Followup = followup or FinishOnly()
        # Where every attempt is logged (the delivery log); None: not logged.
        self._attempt_sink = attempt_sink
        # The event's correlation keys for the log (service/catalog/correlation.py).
        self._correlate = correlate
        self._clock = clock
        # A debug line per success costs more than the delivery's own bookkeeping; the
        # decision is taken once, not per delivery.
        self._log_successes = log_successes
        self._tracing = tracing
        self._endpoints: dict[str, _Endpoint] = {}
        self._workers: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Jobs queued for an endpoint or in an attempt."""
        return sum(len(e.queue) + e.workers for e in self._endpoints.values())

    def circuits_in(self, state: State) -> int:
        return sum(1 for e in self._endpoints.values() if e.breaker and e.breaker.state is state)

    async def close(self) -> None:
        """Stop every worker; unfinished jobs never report, so their records stay uncommitted."""
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def wait_before_more(self, sub_id: str) -> float | None:
        """Seconds until this endpoint should be given another delivery (its queue is at its
        horizon, service/delivery/horizon.py); None when it can take one now."""
        endpoint = self._endpoints.get(sub_id)
        if endpoint is None:
            return None
        return wait_before_more(
            endpoint.settings.sub, endpoint.pace, self.queued(sub_id), open_pace=endpoint.open_pace
        )

    def room(self, sub_id: str, default: int) -> int:
        """How many deliveries to read back for the endpoint now (service/delivery/horizon.py,
        `refill`); `default` for an endpoint this pool has not seen yet."""
        endpoint = self._endpoints.get(sub_id)
        if endpoint is None:
            return default
        return refill(
            endpoint.settings.sub, endpoint.pace, self.queued(sub_id), open_pace=endpoint.open_pace
        )

    def drains_in(self, sub_id: str) -> float:
        """Seconds until the endpoint's queue runs dry (service/delivery/horizon.py)."""
        endpoint = self._endpoints.get(sub_id)
        if endpoint is None:
            return 0.0
        return drains_in(
            endpoint.settings.sub, endpoint.pace, self.queued(sub_id), open_pace=endpoint.open_pace
        )

    def queued(self, sub_id: str) -> int:
        """The endpoint's deliveries in this process: queued, or in an attempt."""
        endpoint = self._endpoints.get(sub_id)
        return 0 if endpoint is None else len(endpoint.queue) + endpoint.workers

    def forget(self, sub_id: str) -> None:
        endpoint = self._endpoints.get(sub_id)
        if endpoint is not None and not endpoint.queue and not endpoint.workers:
            del self._endpoints[sub_id]

    def submit(self, job: DeliveryJob) -> None:
        """Queue the job's next attempt; a job whose subscription is gone is a dead letter."""
        sub = job.sub
        if sub is None:
            self._followup.give_up(job, "subscription_deleted")
            return
        endpoint = self._endpoints.get(sub.id)
        if endpoint is None:
            endpoint = _Endpoint(EndpointSettings(sub, self._policy), self._circuit, self._clock())
            self._endpoints[sub.id] = endpoint
        endpoint.queue.append(job)
        if endpoint.workers < sub.max_in_flight:
            endpoint.workers += 1
            # A worker serves many records' jobs: it must not inherit the span current where
            # it happens to be started (log lines would name that record's trace).
            task = asyncio.create_task(self._work(endpoint), context=contextvars.Context())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self, endpoint: _Endpoint) -> None:
        try:
            while endpoint.queue:
                job = endpoint.queue.popleft()
                if job.done:
                    continue
                try:
                    await self._run(endpoint, job)
                except Exception:  # a job that never finishes would stall its record
                    log.exception("delivery_internal_error", subscription_id=job.sub_id,
                                  event_id=job.event.id)  # fmt: skip
                    if not job.done and not job.handed_on:
                        self._followup.give_up(job, "internal_error")
        finally:
            endpoint.workers -= 1

    async def _run(self, endpoint: _Endpoint, job: DeliveryJob) -> None:
        sub = self._find(job.sub_id) if self._find is not None else job.sub
        if sub is None or not sub.enabled:
            reason = "subscription_deleted" if sub is None else "subscription_disabled"
            log.info("delivery_not_attempted", event_id=job.event.id, subscription_id=job.sub_id,
                     reason=reason)  # fmt: skip
            self._followup.give_up(job, reason)
            return
        job.reread(sub)
        if endpoint.settings.sub is not sub:
            endpoint.reconfigure(EndpointSettings(sub, self._policy))
        breaker = endpoint.breaker
        # The receiver has seen it fail: a delivery whose attempts were all refused by the
        # circuit is a first request to the receiver, and no better a probe than a new one.
        failed_before = job.sent > 0
        if breaker is not None and not breaker.allow(self._clock(), failed_before=failed_before):
            assert endpoint.refusals is not None, "made with the breaker"
            # Paced: meanwhile the endpoint's queue reaches its horizon and its further
            # records wait in Kafka, so a dead endpoint's backlog is not worked through at the
            # healthy endpoints' expense. The circuit may have half-opened during the wait.
            await endpoint.refusals.acquire()
            if job.done:  # abandoned while it waited (its partition moved away)
                return
            now = self._clock()
            if not breaker.allow(now, failed_before=failed_before):
                self._refuse(endpoint, job, sub, breaker, now)
                return
        probe = breaker is not None and breaker.state is State.HALF_OPEN
        if endpoint.limiter is not None:
            await endpoint.limiter.acquire()
            if job.done:  # abandoned while it waited for a token (its partition moved away)
                return
        job.attempting(self._clock())
        prepared = prepare(
            endpoint.settings, job.event, job.msg_id, int(self._clock()), job.sequence
        )
        if self._tracing is None:
            await self._send(endpoint, job, sub, prepared, probe)
            return
        with self._tracing.attempt(
            job.trace_parent, prepared, job.attempts, sub.id, job.event
        ) as span:
            # What follows this attempt (a retry tier's handoff) hangs under it.
            job.trace_parent = context_of(span)
            result = await self._send(endpoint, job, sub, prepared, probe)
            attempt_result(span, result)

    def _refuse(
        self, endpoint: _Endpoint, job: DeliveryJob, sub: Subscription, breaker: CircuitBreaker,
        now: float,
    ) -> None:  # fmt: skip
        """The attempt falls due while the circuit is open: it counts as failed, without a
        request, so that max_attempts and the retry window keep their meaning and the
        delivery waits in a retry tier for its next step, not for the circuit."""
        job.attempting(now, sending=False)
        until = rfc3339(max(now, breaker.retry_at))
        refused = AttemptResult(
            Outcome.CIRCUIT_OPEN,
            None,
            0.0,
            f"not sent: the endpoint's circuit is open until {until}",
        )
        unsent = Prepared(sub.method, sub.url, {}, None)
        if self._attempt_sink is not None:
            self._attempt_sink.add(attempt_record(
                job.event, sub, job.msg_id, job.attempts, "delivery", unsent, refused, now,
                job.replay_of, keys=self._keys(job.event),
            ))  # fmt: skip
        if self._tracing is not None:
            # A span for the attempt not sent, so that a trace shows why its delivery
            # waits; what follows (the retry tier's handoff) hangs under it.
            with self._tracing.attempt(
                job.trace_parent, unsent, job.attempts, sub.id, job.event
            ) as span:
                job.trace_parent = context_of(span)
                attempt_result(span, refused)
        self._count(refused, job)
        endpoint.pace.finished(now)
        self._followup.attempted(job, refused, None)

    async def _send(
        self, endpoint: _Endpoint, job: DeliveryJob, sub: Subscription, prepared: Prepared,
        probe: bool,
    ) -> AttemptResult:  # fmt: skip
        """Send the attempt, log and count it, and hand the job to its followup."""
        breaker = endpoint.breaker
        result = await self._sender.send(endpoint.settings, prepared)
        done_at = self._clock()
        if self._attempt_sink is not None:
            trigger = "delivery" if job.replay_of is None else "replay"
            self._attempt_sink.add(attempt_record(
                job.event, sub, job.msg_id, job.attempts, trigger, prepared, result, done_at,
                job.replay_of, keys=self._keys(job.event),
            ))  # fmt: skip
        endpoint.pace.finished(done_at)
        transition = breaker.record(result.ok, done_at, probe=probe) if breaker else None
        if job.done:
            return result  # cancelled while the request was out
        self._count(result, job)
        if result.ok:
            metrics.END_TO_END_LATENCY.observe(max(0.0, done_at - job.event.time_unix))
        self._followup.attempted(job, result, transition)
        return result

    async def attempt(
        self,
        event: Event,
        sub: Subscription,
        *,
        trigger: str = "test",
        deadline: float | None = None,
        read_limit: int | None = None,
        traced: bool = False,
    ) -> tuple[Prepared, AttemptResult]:
        """One request now, outside the queue, limits and circuit (test sends, pre-call
        lookups): signed, authenticated and shaped like a delivery, under the same address
        rules. `deadline` caps the subscription's timeout; `read_limit` reads more of the
        answer. With tracing on, a `traced` attempt is a span under the current one (a lookup's)."""
        settings = EndpointSettings(sub, self._policy, deadline=deadline)
        msg_id = message_id(sub.id, event.id)
        prepared = prepare(settings, event, msg_id, int(self._clock()))
        if self._tracing is None or not traced:
            result = await self._sender.send(settings, prepared, read_limit=read_limit)
        else:
            with self._tracing.attempt(None, prepared, 1, sub.id, event) as span:
                result = await self._sender.send(settings, prepared, read_limit=read_limit)
                attempt_result(span, result)
        if self._attempt_sink is not None:
            self._attempt_sink.add(
                attempt_record(
                    event,
                    sub,
                    msg_id,
                    1,
                    trigger,
                    prepared,
                    result,
                    self._clock(),
                    keys=self._keys(event),
                )
            )
        return prepared, result

    def _keys(self, event: Event) -> dict[str, str] | None:
        return self._correlate(event) if self._correlate is not None else None

    def _count(self, result: AttemptResult, job: DeliveryJob) -> None:
        attempts, duration = _attempt_metrics(result.outcome, result.status)
        attempts.inc()
        duration.observe(result.duration)
        if result.ok:
            if self._log_successes:
                log.debug("delivered", event_id=job.event.id, subscription_id=job.sub_id,
                          webhook_id=job.msg_id, status=result.status, attempt=job.attempts,
                          duration=result.duration)  # fmt: skip
        else:
            trace = job.event.trace
            log.info("delivery_attempt_failed", event_id=job.event.id,
                     trace_id=trace.trace_id if trace is not None else None,
                     subscription_id=job.sub_id, webhook_id=job.msg_id,
                     outcome=result.outcome.value, status=result.status, error=result.error,
                     attempt=job.attempts, duration=result.duration)  # fmt: skip


@functools.cache
def _attempt_metrics(outcome: Outcome, status: int | None) -> tuple[Any, Any]:
    """The labelled children for an outcome and status, looked up once instead of per attempt."""
    return (
        metrics.DELIVERY_ATTEMPTS.labels(outcome.value, metrics.status_class(status)),
        metrics.DELIVERY_DURATION.labels(outcome.value),
    )
