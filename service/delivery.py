"""The delivery pool: one event to one subscription over HTTP, signed, within the endpoint's limits.

One shared aiohttp session for every endpoint. Each subscription has its own concurrency slots
and token bucket, so a slow endpoint queues its own deliveries without taking connections or
turns from anyone else's; nothing here is ordered per partition.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiolimiter import AsyncLimiter

from service import __version__, metrics
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
# Backoff of the in-process retries; each wait is randomized ±20% so that many deliveries
# failing together do not come back together.
_JITTER: Final = 0.2


class _Endpoint:
    """Per-subscription state that outlives edits to the subscription."""

    __slots__ = ("headers", "key", "limiter", "literal_error", "slots", "sub", "timeout")

    def __init__(
        self, sub: Subscription, policy: AddressPolicy, previous: _Endpoint | None
    ) -> None:
        self.sub = sub
        self.key = secret_key(sub.secret)
        self.headers = {
            **sub.headers,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        self.timeout = aiohttp.ClientTimeout(
            total=sub.timeout_seconds, connect=min(sub.timeout_seconds, MAX_CONNECT_SECONDS)
        )
        # aiohttp never asks the resolver about an IP literal, so literals are judged here.
        self.literal_error: str | None = None
        try:
            policy.check_literal(urlsplit(sub.url).hostname or "")
        except BlockedAddress as exc:
            self.literal_error = str(exc)
        # Keep the limits' state across edits that do not change them, so an edit of the
        # URL does not grant a fresh burst or forget requests still in flight.
        same_limits = previous is not None and (
            previous.sub.max_in_flight == sub.max_in_flight
            and previous.sub.rate_limit == sub.rate_limit
        )
        self.slots: asyncio.Semaphore
        self.limiter: AsyncLimiter | None
        if previous is not None and same_limits:
            self.slots = previous.slots
            self.limiter = previous.limiter
        else:
            self.slots = asyncio.Semaphore(sub.max_in_flight)
            self.limiter = (
                AsyncLimiter(
                    sub.rate_limit.capacity(), sub.rate_limit.capacity() / sub.rate_limit.per_second
                )
                if sub.rate_limit is not None
                else None
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._max_connections = max_connections
        self._body_cap = body_cap
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            resolver=GuardedResolver(self._policy),
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
        if self._session is not None:
            await self._session.close()

    def forget(self, sub_id: str) -> None:
        self._endpoints.pop(sub_id, None)

    def _endpoint(self, sub: Subscription) -> _Endpoint:
        endpoint = self._endpoints.get(sub.id)
        if endpoint is None or endpoint.sub is not sub:
            endpoint = _Endpoint(sub, self._policy, endpoint)
            self._endpoints[sub.id] = endpoint
        return endpoint

    async def deliver(
        self,
        event: Event,
        sub: Subscription,
        *,
        current: Callable[[str], Subscription | None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> bool:
        """Deliver until a 2xx or the attempts run out; True if delivered. Never raises.

        `current` looks the subscription up again before each retry, so an edit (a new URL,
        a disabled endpoint) applies to deliveries already under way.
        """
        msg_id = message_id(sub.id, event.id)
        metrics.DELIVERIES_IN_FLIGHT.inc()
        try:
            for attempt in range(1, self._attempts + 1):
                result = await self.attempt(event, sub, msg_id)
                _record(result, event, sub, msg_id, attempt)
                if result.ok:
                    metrics.END_TO_END_LATENCY.observe(max(0.0, self._clock() - event.time_unix))
                    metrics.DELIVERIES.labels("delivered").inc()
                    return True
                if attempt == self._attempts:
                    break
                await sleep(_jittered(self._backoff * 2 ** (attempt - 1)))
                latest = current(sub.id) if current is not None else sub
                if latest is None or not latest.enabled:
                    log.info("delivery_dropped", event_id=event.id, subscription_id=sub.id,
                             reason="subscription deleted or disabled")  # fmt: skip
                    break
                sub = latest
            metrics.DELIVERIES.labels("abandoned").inc()
            log.warning("delivery_abandoned", event_id=event.id, subscription_id=sub.id,
                        attempts=attempt)  # fmt: skip
            return False
        finally:
            metrics.DELIVERIES_IN_FLIGHT.dec()

    async def attempt(self, event: Event, sub: Subscription, msg_id: str) -> AttemptResult:
        """One signed HTTP request within the endpoint's concurrency and rate limits."""
        endpoint = self._endpoint(sub)
        async with endpoint.slots:
            if endpoint.limiter is not None:
                await endpoint.limiter.acquire()
            return await self._send(endpoint, event.webhook_body(), msg_id)

    async def _send(self, endpoint: _Endpoint, body: bytes, msg_id: str) -> AttemptResult:
        assert self._session is not None, "DeliveryPool.start() was not awaited"
        if endpoint.literal_error is not None:
            return AttemptResult(Outcome.BLOCKED_ADDRESS, None, 0.0, endpoint.literal_error)
        timestamp = int(self._clock())
        headers = {
            **endpoint.headers,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(endpoint.key, msg_id, timestamp, body),
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
            ) as resp:
                # Read a bounded excerpt; the rest of an oversized body is never buffered.
                excerpt = await resp.content.read(self._body_cap) if self._body_cap else b""
                status = resp.status
        except Exception as exc:
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


def _record(result: AttemptResult, event: Event, sub: Subscription, msg_id: str, n: int) -> None:
    metrics.DELIVERY_ATTEMPTS.labels(
        result.outcome.value, metrics.status_class(result.status)
    ).inc()
    metrics.DELIVERY_DURATION.labels(result.outcome.value).observe(result.duration)
    if result.ok:
        log.debug("delivered", event_id=event.id, subscription_id=sub.id, webhook_id=msg_id,
                  status=result.status, attempt=n, duration=round(result.duration, 4))  # fmt: skip
    else:
        log.info("delivery_attempt_failed", event_id=event.id, subscription_id=sub.id,
                 webhook_id=msg_id, outcome=result.outcome.value, status=result.status,
                 error=result.error, attempt=n, duration=round(result.duration, 4))  # fmt: skip
