"""The delivery pool: one event to one subscription over HTTP, signed, within the endpoint's limits.

Each endpoint (subscription) has its own FIFO of jobs, drained by at most `max_in_flight`
workers that are started when jobs arrive and end when the queue is empty. A slow or dead
endpoint therefore holds only its own workers and queue; deliveries to every other endpoint go
on at their own pace, and nothing is ordered per Kafka partition. All endpoints share one
aiohttp session and its connection pool.

A job reports back once, through `on_done(delivered)`, when it got a 2xx or ran out of
attempts. A cancelled job (its partition revoked, or the service stopping) never reports: its
record stays uncommitted and is delivered again by whoever reads it next.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiolimiter import AsyncLimiter

from service import __version__, logs, metrics
from service.events import Event
from service.netguard import AddressPolicy, BlockedAddress, GuardedResolver
from service.outcomes import AttemptResult, Outcome, outcome_for_exception, outcome_for_status
from service.signing import message_id, secret_key, sign
from service.subscriptions import Subscription

log = structlog.get_logger("switchboard.delivery")

USER_AGENT: Final = f"switchboard/{__version__}"
# Connecting should take a round trip or two; a receiver that cannot accept within this
# is down, whatever its overall timeout says.
MAX_CONNECT_SECONDS: Final = 5.0
# Backoff of the in-process retries is randomized ±20%, so that many deliveries failing
# together do not come back together.
_JITTER: Final = 0.2

Lookup = Callable[[str], Subscription | None]


class DeliveryJob:
    """One event to one subscription, through every attempt."""

    __slots__ = ("_pool", "_timer", "attempt", "cancelled", "event", "msg_id", "on_done", "sub")

    def __init__(
        self,
        pool: DeliveryPool,
        event: Event,
        sub: Subscription,
        on_done: Callable[[bool], None],
    ) -> None:
        self._pool = pool
        self.event = event
        self.sub = sub
        self.on_done = on_done
        self.msg_id = message_id(sub.id, event.id)
        self.attempt = 0
        self.cancelled = False
        self._timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        """Abandon the job: it will not be attempted again and will never report."""
        if self.cancelled:
            return
        self.cancelled = True
        if self._timer is not None:
            self._timer.cancel()
        self._pool.pending -= 1


class _Endpoint:
    """Per-subscription queue, workers and limits; survives edits of the subscription."""

    __slots__ = (
        "config_error",
        "headers",
        "key",
        "limiter",
        "previous_key",
        "previous_until",
        "queue",
        "sub",
        "timeout",
        "workers",
    )

    def __init__(self, sub: Subscription, policy: AddressPolicy) -> None:
        self.queue: deque[DeliveryJob] = deque()
        self.workers = 0
        self.limiter: AsyncLimiter | None = None
        self.configure(sub, policy)

    def configure(self, sub: Subscription, policy: AddressPolicy) -> None:
        """Derive what each request needs from the subscription, once per version of it."""
        previous: Subscription | None = getattr(self, "sub", None)
        self.sub = sub
        # A record written to the table by anything but this API may hold what cannot work;
        # it fails its deliveries with a reason instead of failing the caller.
        self.config_error: str | None = None
        self.previous_key = b""
        self.previous_until = 0.0
        try:
            self.key = secret_key(sub.secret)
            if sub.previous_secret and sub.previous_secret_expires_at:
                self.previous_key = secret_key(sub.previous_secret)
                self.previous_until = datetime.fromisoformat(
                    sub.previous_secret_expires_at
                ).timestamp()
        except ValueError as exc:
            self.key = b""
            self.config_error = f"unusable secret: {exc}"
        self.headers = {**sub.headers, "content-type": "application/json", "user-agent": USER_AGENT}
        self.timeout = aiohttp.ClientTimeout(
            total=sub.timeout_seconds, connect=min(sub.timeout_seconds, MAX_CONNECT_SECONDS)
        )
        # aiohttp never asks the resolver about an IP literal, so literals are judged here.
        try:
            policy.check_url(sub.url)
        except BlockedAddress as exc:
            self.config_error = self.config_error or str(exc)
        except ValueError as exc:  # urlsplit on a malformed URL
            self.config_error = self.config_error or f"unusable URL: {exc}"
        # An edit that keeps the rate limit keeps the bucket: no fresh burst for a URL change.
        if previous is None or previous.rate_limit != sub.rate_limit:
            rate = sub.rate_limit
            self.limiter = (
                AsyncLimiter(rate.capacity(), rate.capacity() / rate.per_second) if rate else None
            )


class DeliveryPool:
    def __init__(
        self,
        *,
        policy: AddressPolicy,
        max_connections: int,
        body_cap: int,
        attempts: int,
        backoff_seconds: float,
        lookup: Lookup | None = None,
        egress_proxy: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        # With an egress proxy, names are resolved by the proxy, which must do its own
        # filtering (smokescreen-style); literal addresses are still refused here.
        self._proxy = egress_proxy
        self._max_connections = max_connections
        self._body_cap = body_cap
        self._attempts = attempts
        self._backoff = backoff_seconds
        # Reads the subscription again before each attempt, so that an edit (a new URL, a
        # disabled endpoint) applies to deliveries already queued or waiting to retry.
        self._lookup = lookup
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.pending = 0
        # Read when /metrics is scraped rather than updated twice per delivery.
        metrics.DELIVERIES_IN_FLIGHT.set_function(lambda: self.pending)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            resolver=GuardedResolver(
                self._policy,
                exempt=frozenset({urlsplit(self._proxy).hostname or ""} if self._proxy else ()),
            ),
            ttl_dns_cache=60,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Proxies come from explicit settings only, never from the pod's environment.
            trust_env=False,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        """Stop every worker; unfinished jobs never report, so their records stay uncommitted."""
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def forget(self, sub_id: str) -> None:
        endpoint = self._endpoints.get(sub_id)
        if endpoint is not None and not endpoint.queue and not endpoint.workers:
            del self._endpoints[sub_id]

    # Submitting

    def submit(
        self, event: Event, sub: Subscription, on_done: Callable[[bool], None]
    ) -> DeliveryJob:
        """Queue a delivery; `on_done(delivered)` is called once when it is finished."""
        job = DeliveryJob(self, event, sub, on_done)
        self.pending += 1
        self._enqueue(job)
        return job

    async def deliver(self, event: Event, sub: Subscription) -> bool:
        """Submit and wait: True once delivered, False once abandoned."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.submit(event, sub, done.set_result)
        return await done

    def _enqueue(self, job: DeliveryJob) -> None:
        endpoint = self._endpoints.get(job.sub.id)
        if endpoint is None:
            endpoint = self._endpoints[job.sub.id] = _Endpoint(job.sub, self._policy)
        endpoint.queue.append(job)
        if endpoint.workers < job.sub.max_in_flight:
            endpoint.workers += 1
            task = asyncio.create_task(self._work(endpoint))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    # Working

    async def _work(self, endpoint: _Endpoint) -> None:
        try:
            while endpoint.queue:
                job = endpoint.queue.popleft()
                if job.cancelled:
                    continue
                try:
                    await self._run(endpoint, job)
                except Exception:  # a job that never reports would stall its partition
                    log.exception("delivery_internal_error", subscription_id=job.sub.id,
                                  event_id=job.event.id)  # fmt: skip
                    if not job.cancelled and job._timer is None:
                        self._finish(job, delivered=False)
        finally:
            endpoint.workers -= 1

    async def _run(self, endpoint: _Endpoint, job: DeliveryJob) -> None:
        sub = self._lookup(job.sub.id) if self._lookup is not None else job.sub
        if sub is None or not sub.enabled:
            log.info("delivery_dropped", event_id=job.event.id, subscription_id=job.sub.id,
                     reason="subscription deleted or disabled")  # fmt: skip
            self._finish(job, delivered=False)
            return
        job.sub = sub
        if endpoint.sub is not sub:
            endpoint.configure(sub, self._policy)
        if endpoint.limiter is not None:
            await endpoint.limiter.acquire()
        job.attempt += 1
        result = await self._send(endpoint, job.event.webhook_body(), job.msg_id)
        if job.cancelled:
            return
        _record(result, job)
        if result.ok:
            metrics.END_TO_END_LATENCY.observe(max(0.0, self._clock() - job.event.time_unix))
            self._finish(job, delivered=True)
        elif job.attempt >= self._attempts:
            log.warning("delivery_abandoned", event_id=job.event.id, subscription_id=sub.id,
                        attempts=job.attempt)  # fmt: skip
            self._finish(job, delivered=False)
        else:
            # The retry waits on a timer, not in a worker: a failing endpoint's backoff does
            # not take a concurrency slot from its healthy deliveries.
            delay = _jittered(self._backoff * 2 ** (job.attempt - 1))
            job._timer = asyncio.get_running_loop().call_later(delay, self._retry, job)

    def _retry(self, job: DeliveryJob) -> None:
        job._timer = None
        if not job.cancelled:
            self._enqueue(job)

    def _finish(self, job: DeliveryJob, *, delivered: bool) -> None:
        self.pending -= 1
        (_DELIVERED if delivered else _ABANDONED).inc()
        job.on_done(delivered)

    async def attempt(self, event: Event, sub: Subscription) -> AttemptResult:
        """One signed request now, outside the queue and limits (tests and test sends)."""
        endpoint = _Endpoint(sub, self._policy)
        return await self._send(endpoint, event.webhook_body(), message_id(sub.id, event.id))

    async def _send(self, endpoint: _Endpoint, body: bytes, msg_id: str) -> AttemptResult:
        assert self._session is not None, "DeliveryPool.start() was not awaited"
        if endpoint.config_error is not None:
            refused = (
                Outcome.INTERNAL_ERROR
                if endpoint.config_error.startswith("unusable")
                else Outcome.BLOCKED_ADDRESS
            )
            return AttemptResult(refused, None, 0.0, endpoint.config_error)
        timestamp = int(self._clock())
        signature = sign(endpoint.key, msg_id, timestamp, body)
        if endpoint.previous_key and timestamp < endpoint.previous_until:
            # During a rotation's grace period both secrets sign, space-separated.
            signature += " " + sign(endpoint.previous_key, msg_id, timestamp, body)
        headers = {
            **endpoint.headers,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        started = time.perf_counter()
        try:
            async with self._session.request(
                endpoint.sub.method,
                endpoint.sub.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=endpoint.timeout,
                proxy=self._proxy,
            ) as resp:
                # Read a bounded excerpt; the rest of an oversized body is never buffered.
                excerpt = await resp.content.read(self._body_cap) if self._body_cap else b""
                status = resp.status
        except Exception as exc:  # every failure becomes a named outcome
            outcome = outcome_for_exception(exc)
            if outcome is None:
                log.exception("delivery_internal_error", subscription_id=endpoint.sub.id)
                outcome = Outcome.INTERNAL_ERROR
            return AttemptResult(
                outcome, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
            )
        return AttemptResult(
            outcome_for_status(status), status, time.perf_counter() - started, None, excerpt
        )


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter, not a secret


_DELIVERED: Final = metrics.DELIVERIES.labels("delivered")
_ABANDONED: Final = metrics.DELIVERIES.labels("abandoned")


@functools.cache
def _attempt_metrics(outcome: Outcome, status: int | None) -> tuple[Any, Any]:
    """The labelled children for an outcome and status, looked up once instead of per attempt."""
    return (
        metrics.DELIVERY_ATTEMPTS.labels(outcome.value, metrics.status_class(status)),
        metrics.DELIVERY_DURATION.labels(outcome.value),
    )


def _record(result: AttemptResult, job: DeliveryJob) -> None:
    attempts, duration = _attempt_metrics(result.outcome, result.status)
    attempts.inc()
    duration.observe(result.duration)
    if result.ok:
        if logs.debug_enabled:
            log.debug("delivered", event_id=job.event.id, subscription_id=job.sub.id,
                      webhook_id=job.msg_id, status=result.status, attempt=job.attempt,
                      duration=result.duration)  # fmt: skip
    else:
        log.info("delivery_attempt_failed", event_id=job.event.id, subscription_id=job.sub.id,
                 webhook_id=job.msg_id, outcome=result.outcome.value, status=result.status,
                 error=result.error, attempt=job.attempt, duration=result.duration)  # fmt: skip
