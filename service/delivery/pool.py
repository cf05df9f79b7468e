"""The delivery pool: one attempt of one event to one subscription, signed, within limits.

Each endpoint (subscription) has its own FIFO of jobs, drained by at most `max_in_flight`
workers that are started when jobs arrive and end when the queue is empty. A slow or dead
endpoint therefore holds only its own workers and queue; deliveries to every other endpoint go
on at their own pace, and nothing is ordered per Kafka partition. All endpoints share one
aiohttp session and its connection pool.

The pool makes one attempt per job and hands the job on to its `Followup` (the Kafka side:
retry topics, dead letters, endpoint health), which calls `job.finish()` once what follows is
durable. Before each attempt the subscription is read again (an edit applies to queued and
retried deliveries) and its circuit breaker is asked: an open circuit puts the job off
without a request. A cancelled job (its partition revoked, the service stopping) never
finishes: its record stays uncommitted and is read again by whoever owns it next.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiolimiter import AsyncLimiter
from yarl import URL

from service import __version__
from service.attempt_log.record import EXCERPT_CHARS, AttemptRecord, AttemptSink
from service.delivery.circuit import CircuitBreaker, State, Transition
from service.delivery.netguard import AddressPolicy, BlockedAddress, GuardedResolver
from service.delivery.oauth import TokenCache, TokenError
from service.delivery.outcomes import (
    AttemptResult,
    Outcome,
    outcome_for_exception,
    outcome_for_status,
)
from service.delivery.record import LastError, Origin
from service.delivery.signing import message_id, secret_key, sign
from service.delivery.success import MAX_CONDITION_BODY, CompiledCondition, InvalidCondition
from service.delivery.templates import InvalidTemplate, RequestShape
from service.events.envelope import Event
from service.observability import logs, metrics
from service.subscriptions.auth import MASK, OAuth2Auth, header_name, static_header
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.delivery")

USER_AGENT: Final = f"switchboard/{__version__}"
# Connecting should take a round trip or two; a receiver that cannot accept within this
# is down, whatever its overall timeout says.
MAX_CONNECT_SECONDS: Final = 5.0
# What a job built outside a Kafka record (a test send) says about where it came from.
NO_ORIGIN: Final = Origin("", -1, -1)
# A token endpoint slower than this is failing, whatever the webhook's own timeout.
TOKEN_TIMEOUT: Final = aiohttp.ClientTimeout(total=10, connect=MAX_CONNECT_SECONDS)


class Prepared:
    """One request as it will be sent: what a test send echoes (with secrets masked)."""

    __slots__ = ("body", "headers", "method", "secret_headers", "url")

    def __init__(
        self, method: str, url: str | URL, headers: dict[str, str], body: bytes | None
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        # Header names whose values are credentials: masked wherever the request is shown.
        self.secret_headers: tuple[str, ...] = ()

    def shown(self) -> dict[str, object]:
        masked = {n.lower() for n in self.secret_headers}
        return {
            "method": self.method,
            "url": str(self.url),
            "headers": {k: MASK if k.lower() in masked else v for k, v in self.headers.items()},
            "body": self.body.decode("utf-8", "replace") if self.body is not None else None,
        }


Lookup = Callable[[str], Subscription | None]


class CircuitSettings(Protocol):
    @property
    def circuit_failure_threshold(self) -> int: ...
    @property
    def circuit_open_seconds(self) -> float: ...
    @property
    def circuit_max_open_seconds(self) -> float: ...


class Followup(Protocol):
    """What happens after the pool is done with a job; each calls `job.finish()` eventually."""

    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None: ...

    def give_up(self, job: DeliveryJob, reason: str) -> None: ...

    def defer(self, job: DeliveryJob, until: float) -> None: ...


class FinishOnly:
    """A followup that only finishes jobs: for a pool used without Kafka (test sends, tests)."""

    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None:
        job.finish()

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        job.finish()

    def defer(self, job: DeliveryJob, until: float) -> None:
        job.finish()


class DeliveryJob:
    """One event to one subscription: this attempt, and what is known of the earlier ones."""

    __slots__ = (
        "_pool",
        "attempts",
        "done",
        "event",
        "first_attempt_at",
        "last_error",
        "msg_id",
        "on_done",
        "origin",
        "replay_of",
        "result",
        "sub",
        "sub_id",
        "task",
    )

    def __init__(
        self,
        pool: DeliveryPool,
        event: Event,
        sub_id: str,
        sub: Subscription | None,
        on_done: Callable[[], None],
        *,
        origin: Origin,
        attempts: int = 0,
        first_attempt_at: float | None = None,
        replay_of: str | None = None,
    ) -> None:
        self._pool = pool
        self.event = event
        self.sub_id = sub_id
        # The subscription as last read; None when it was deleted before the job was made.
        self.sub = sub
        self.on_done = on_done
        self.origin = origin
        self.msg_id = message_id(sub_id, event.id)
        self.attempts = attempts  # made before this job, plus this job's once it is made
        self.first_attempt_at = first_attempt_at
        self.replay_of = replay_of
        self.result: AttemptResult | None = None
        # The error of the last attempt before this job (from its retry record).
        self.last_error: LastError | None = None
        self.done = False
        # The followup's produce (to a retry topic or the dead letters), cancelled with the job.
        self.task: asyncio.Task[None] | None = None
        # Pending from creation until it finishes or is cancelled, queued or not.
        pool.pending += 1

    def finish(self) -> None:
        """What follows the attempt is durable: the job's record may be committed."""
        if self.done:
            return
        self.done = True
        self._pool.pending -= 1
        self.on_done()

    def cancel(self) -> None:
        """Abandon the job: no further attempt, no produce, and it will never finish."""
        if self.done:
            return
        self.done = True
        self._pool.pending -= 1
        if self.task is not None:
            self.task.cancel()


class _Endpoint:
    """Per-subscription queue, workers and limits; survives edits of the subscription."""

    __slots__ = (
        "breaker",
        "condition",
        "config_error",
        "headers",
        "key",
        "limiter",
        "oauth",
        "previous_key",
        "previous_until",
        "queue",
        "secret_headers",
        "shape",
        "sub",
        "timeout",
        "workers",
    )

    def __init__(
        self, sub: Subscription, policy: AddressPolicy, circuit: CircuitSettings | None
    ) -> None:
        self.queue: deque[DeliveryJob] = deque()
        self.workers = 0
        self.limiter: AsyncLimiter | None = None
        self.breaker = (
            CircuitBreaker(
                threshold=circuit.circuit_failure_threshold,
                open_seconds=circuit.circuit_open_seconds,
                max_open_seconds=circuit.circuit_max_open_seconds,
            )
            if circuit is not None
            else None
        )
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
        # The default shape stands if the subscription's cannot compile (a record written
        # around the API): its attempts then fail with config_error, they do not crash.
        self.shape = RequestShape(method=sub.method)
        self.condition: CompiledCondition | None = None
        try:
            self.shape = RequestShape(method=sub.method, body_template=sub.body_template,
                                      body_fields=sub.body_fields, headers=sub.headers)  # fmt: skip
            if sub.success is not None:
                self.condition = CompiledCondition(sub.success)
        except (InvalidTemplate, InvalidCondition) as exc:
            self.config_error = self.config_error or f"unusable request settings: {exc}"
        # Templated header values are rendered per event and added over these.
        self.headers = {**sub.headers, "user-agent": USER_AGENT}
        if not self.shape.in_query:
            self.headers["content-type"] = "application/json"
        self.oauth = sub.auth if isinstance(sub.auth, OAuth2Auth) else None
        self.secret_headers: tuple[str, ...] = ()
        if sub.auth is not None:
            self.secret_headers = (header_name(sub.auth),)
            if (pair := static_header(sub.auth)) is not None:
                self.headers[pair[0]] = pair[1]
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
        lookup: Lookup | None = None,
        egress_proxy: str | None = None,
        circuit: CircuitSettings | None = None,
        followup: Followup | None = None,
        attempt_sink: AttemptSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        # With an egress proxy, names are resolved by the proxy, which must do its own
        # filtering (smokescreen-style); literal addresses are still refused here.
        self._proxy = egress_proxy
        self._max_connections = max_connections
        self._body_cap = body_cap
        # Reads the subscription again before each attempt, so that an edit (a new URL, a
        # disabled endpoint) applies to deliveries already queued or waiting to retry.
        self._lookup = lookup
        self._circuit = circuit
        self.followup: Followup = followup or FinishOnly()
        # Where every attempt is logged (the attempts topic); None: not logged.
        self.attempt_sink = attempt_sink
        self.tokens = TokenCache()
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.pending = 0
        # Read when /metrics is scraped rather than updated twice per delivery.
        metrics.DELIVERIES_IN_FLIGHT.set_function(lambda: self.pending)
        for state in State:
            metrics.CIRCUITS.labels(state.value).set_function(
                functools.partial(self.circuits_in, state)
            )

    def circuits_in(self, state: State) -> int:
        return sum(1 for e in self._endpoints.values() if e.breaker and e.breaker.state is state)

    def circuit(self, sub_id: str) -> CircuitBreaker | None:
        endpoint = self._endpoints.get(sub_id)
        return endpoint.breaker if endpoint is not None else None

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
        self,
        event: Event,
        sub: Subscription,
        on_done: Callable[[], None],
        *,
        origin: Origin = NO_ORIGIN,
    ) -> DeliveryJob:
        """Queue a first attempt; `on_done()` is called once what follows it is durable."""
        job = DeliveryJob(self, event, sub.id, sub, on_done, origin=origin)
        self.enqueue(job, sub)
        return job

    def enqueue(self, job: DeliveryJob, sub: Subscription) -> None:
        endpoint = self._endpoints.get(sub.id)
        if endpoint is None:
            endpoint = self._endpoints[sub.id] = _Endpoint(sub, self._policy, self._circuit)
        endpoint.queue.append(job)
        if endpoint.workers < sub.max_in_flight:
            endpoint.workers += 1
            task = asyncio.create_task(self._work(endpoint))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def deliver(self, event: Event, sub: Subscription) -> DeliveryJob:
        """Submit and wait until the job is finished (tests, and callers without Kafka)."""
        done = asyncio.Event()
        job = self.submit(event, sub, done.set)
        await done.wait()
        return job

    # Working

    async def _work(self, endpoint: _Endpoint) -> None:
        try:
            while endpoint.queue:
                job = endpoint.queue.popleft()
                if job.done:
                    continue
                try:
                    await self._run(endpoint, job)
                except Exception:  # a job that never finishes would stall its partition
                    log.exception("delivery_internal_error", subscription_id=job.sub_id,
                                  event_id=job.event.id)  # fmt: skip
                    if not job.done and job.task is None:
                        self.followup.give_up(job, "internal_error")
        finally:
            endpoint.workers -= 1

    async def _run(self, endpoint: _Endpoint, job: DeliveryJob) -> None:
        sub = self._lookup(job.sub_id) if self._lookup is not None else job.sub
        if sub is None or not sub.enabled:
            reason = "subscription_deleted" if sub is None else "subscription_disabled"
            log.info("delivery_not_attempted", event_id=job.event.id, subscription_id=job.sub_id,
                     reason=reason)  # fmt: skip
            self.followup.give_up(job, reason)
            return
        job.sub = sub
        if endpoint.sub is not sub:
            endpoint.configure(sub, self._policy)
        breaker = endpoint.breaker
        if breaker is not None and not breaker.allow(now := self._clock()):
            # Not attempted, not counted as an attempt: the job waits in a retry tier until
            # the circuit may let a probe through, and its worker moves on at once.
            self.followup.defer(job, breaker.defer_until(now))
            return
        if endpoint.limiter is not None:
            await endpoint.limiter.acquire()
        if job.first_attempt_at is None:
            job.first_attempt_at = self._clock()
        job.attempts += 1
        prepared = self._prepare(endpoint, job.event, job.msg_id)
        result = await self._send(endpoint, prepared)
        done_at = self._clock()
        self.log_attempt(job.event, endpoint.sub, job.msg_id, job.attempts, "delivery",
                         prepared, result, done_at)  # fmt: skip
        transition = breaker.record(result.ok, done_at) if breaker is not None else None
        if job.done:
            return  # cancelled while the request was out
        job.result = result
        _record(result, job)
        if result.ok:
            metrics.END_TO_END_LATENCY.observe(max(0.0, done_at - job.event.time_unix))
        self.followup.attempted(job, result, transition)

    async def attempt(
        self,
        event: Event,
        sub: Subscription,
        *,
        trigger: str = "test",
        deadline: float | None = None,
        read_limit: int | None = None,
    ) -> tuple[Prepared, AttemptResult]:
        """One request now, outside the queue, limits and circuit (test sends, pre-call
        lookups): signed, authenticated and shaped like a delivery, under the same address
        rules. `deadline` caps the subscription's timeout; `read_limit` reads more of the
        answer."""
        endpoint = _Endpoint(sub, self._policy, None)
        if deadline is not None and deadline < sub.timeout_seconds:
            endpoint.timeout = aiohttp.ClientTimeout(
                total=deadline, connect=min(deadline, MAX_CONNECT_SECONDS)
            )
        msg_id = message_id(sub.id, event.id)
        prepared = self._prepare(endpoint, event, msg_id)
        result = await self._send(endpoint, prepared, read_limit=read_limit)
        self.log_attempt(event, sub, msg_id, 1, trigger, prepared, result, self._clock())
        return prepared, result

    def log_attempt(  # noqa: PLR0917 - one record's fields, always called with all of them
        self,
        event: Event,
        sub: Subscription,
        msg_id: str,
        attempt: int,
        trigger: str,
        prepared: Prepared,
        result: AttemptResult,
        at: float,
    ) -> None:
        if self.attempt_sink is None:
            return
        url = prepared.url if isinstance(prepared.url, str) else str(prepared.url)
        self.attempt_sink.add(
            AttemptRecord(
                id=f"{msg_id}.{attempt}.{int(at * 1000)}",
                at=at,
                subscription_id=sub.id,
                tenant_id=sub.tenant_id,
                event_id=event.id,
                event_type=event.type,
                webhook_id=msg_id,
                attempt=attempt,
                trigger=trigger,
                method=prepared.method,
                url=url[:2048],
                outcome=result.outcome.value,
                status=result.status,
                latency_ms=round(result.duration * 1000, 3),
                error=result.error,
                response_excerpt=(
                    result.body_excerpt[:EXCERPT_CHARS].decode("utf-8", "replace")
                    if result.body_excerpt
                    else ""
                ),
            )
        )

    def _prepare(self, endpoint: _Endpoint, event: Event, msg_id: str) -> Prepared:
        """Method, URL, headers and body, signed. For GET and DELETE the signed content is
        the query string as sent, since there is no body (docs/security.md)."""
        shape = endpoint.shape
        timestamp = int(self._clock())
        url: str | URL
        if shape.in_query:
            url = URL(endpoint.sub.url).extend_query(shape.query(event))
            body = None
            signed = url.raw_query_string.encode()
        else:
            url = endpoint.sub.url
            body = shape.body(event)
            signed = body
        signature = sign(endpoint.key, msg_id, timestamp, signed)
        if endpoint.previous_key and timestamp < endpoint.previous_until:
            # During a rotation's grace period both secrets sign, space-separated.
            signature += " " + sign(endpoint.previous_key, msg_id, timestamp, signed)
        headers = {
            **endpoint.headers,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        if not shape.is_default:
            headers.update(shape.headers(event))
        prepared = Prepared(endpoint.sub.method, url, headers, body)
        prepared.secret_headers = endpoint.secret_headers
        return prepared

    async def _send(
        self, endpoint: _Endpoint, prepared: Prepared, *, read_limit: int | None = None
    ) -> AttemptResult:
        assert self._session is not None, "DeliveryPool.start() was not awaited"
        if endpoint.config_error is not None:
            refused = (
                Outcome.INTERNAL_ERROR
                if endpoint.config_error.startswith("unusable")
                else Outcome.BLOCKED_ADDRESS
            )
            return AttemptResult(refused, None, 0.0, endpoint.config_error)
        started = time.perf_counter()
        oauth = endpoint.oauth
        if oauth is not None:
            try:
                token = await self.tokens.token(
                    self._session, oauth, timeout=TOKEN_TIMEOUT, proxy=self._proxy
                )
            except TokenError as exc:
                return AttemptResult(
                    Outcome.AUTH_ERROR, None, time.perf_counter() - started, str(exc)
                )
            prepared.headers["Authorization"] = "Bearer " + token
        condition = endpoint.condition
        limit = self._body_cap
        if read_limit is not None or (condition is not None and condition.json_path):
            limit = max(limit, read_limit or MAX_CONDITION_BODY)
        try:
            async with self._session.request(
                prepared.method,
                prepared.url,
                data=prepared.body,
                headers=prepared.headers,
                allow_redirects=False,
                timeout=endpoint.timeout,
                proxy=self._proxy,
            ) as resp:
                # Read a bounded excerpt; the rest of an oversized body is never buffered.
                body = await resp.content.read(limit) if limit else b""
                status = resp.status
                retry_after = resp.headers.get("Retry-After") if status in (429, 503) else None
        except Exception as exc:  # every failure becomes a named outcome
            outcome = outcome_for_exception(exc)
            if outcome is None:
                log.exception("delivery_internal_error", subscription_id=endpoint.sub.id)
                outcome = Outcome.INTERNAL_ERROR
            return AttemptResult(
                outcome, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
            )
        duration = time.perf_counter() - started
        if status == 401 and oauth is not None:
            self.tokens.invalidate(oauth)  # revoked early: the next attempt fetches a new one
        outcome, error = outcome_for_status(status), None
        if condition is not None:
            error = condition.failure(status, body)
            if error is None:
                outcome = Outcome.SUCCESS
            elif outcome is Outcome.SUCCESS or condition.accepts_status(status):
                outcome = Outcome.CONDITION_FAILED
            # else: a status the rule does not accept keeps its own class (429, 5xx, ...)
        excerpt = body if read_limit is not None else body[: self._body_cap]
        return AttemptResult(outcome, status, duration, error, excerpt, retry_after)


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
            log.debug("delivered", event_id=job.event.id, subscription_id=job.sub_id,
                      webhook_id=job.msg_id, status=result.status, attempt=job.attempts,
                      duration=result.duration)  # fmt: skip
    else:
        log.info("delivery_attempt_failed", event_id=job.event.id, subscription_id=job.sub_id,
                 webhook_id=job.msg_id, outcome=result.outcome.value, status=result.status,
                 error=result.error, attempt=job.attempts, duration=result.duration)  # fmt: skip
