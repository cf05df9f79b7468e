"""Pre-call lookups, plugged into the events handler: ask the endpoint now, produce the reply.

The contract (headers, reply shape, statuses) is in `service/lookups/protocol.py` and
docs/events.md. A request is answered in a task tied to its record's token: the record is
finished once the reply is acknowledged, and counts against the loop's in-flight cap like
any record. It does not go through the endpoint's queue, limiter or circuit breaker (a
caller is waiting; a queue of post-call deliveries must not delay the greeting), but through
the same request path (`DeliveryPool.attempt`): signing, auth, templates, address rules.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import structlog

from consumers.engine.contract import Producer, Token
from consumers.engine.produce import produce
from consumers.engine.tasks import finish_when_done
from service.delivery.outcomes import Outcome
from service.delivery.pool import DeliveryPool
from service.events.envelope import Event
from service.lookups.protocol import CORRELATION_HEADER, ENCODER, MAX_ANSWER_BYTES, LookupReply
from service.observability import metrics
from service.observability.tracing import Tracing
from service.routing.router import Router

if TYPE_CHECKING:
    from opentelemetry.context import Context

log = structlog.get_logger("switchboard.lookups")


class LookupHandler:
    def __init__(
        self,
        *,
        deadline_seconds: float,
        router: Router,
        pool: DeliveryPool,
        producer: Producer,
        tracing: Tracing | None = None,
    ) -> None:
        self._deadline = deadline_seconds
        self._tracing = tracing
        self._router = router
        self._pool = pool
        self._producer = producer

    def take(
        self,
        event: Event,
        request: tuple[str, str],
        produced_at_ms: int,
        token: Token,
        trace_parent: Context | None = None,
    ) -> None:
        """Answer the request; the record is done once the reply is acknowledged.
        `trace_parent` is the record's consume span, with tracing on."""
        reply_topic, correlation_id = request
        work = self.answer(event, reply_topic, correlation_id, produced_at_ms)
        if self._tracing is not None:
            # The lookup span is current while it runs: its route and attempt hang under it.
            work = self._tracing.lookup(trace_parent, event, work)
        finish_when_done(token, work, "lookups")

    async def answer(
        self,
        event: Event,
        reply_topic: str,
        correlation_id: str,
        produced_at_ms: int,
    ) -> None:
        """Call the endpoint and produce the reply; returns once the reply is acknowledged."""
        started = time.perf_counter()
        try:
            reply = await self._ask(event, correlation_id, produced_at_ms)
        except Exception:  # a bug of ours: the caller still hears, rather than waiting it out
            log.exception("lookup_failed", event_id=event.id)
            reply = LookupReply(correlation_id=correlation_id, event_id=event.id,
                                status="error", error="internal error")  # fmt: skip
        await produce(
            self._producer,
            reply_topic,
            "lookup_reply",
            key=correlation_id.encode(),
            value=ENCODER.encode(reply),
            headers=[(CORRELATION_HEADER, correlation_id.encode())],
        )
        metrics.LOOKUPS.labels(reply.status).inc()
        metrics.LOOKUP_DURATION.observe(time.perf_counter() - started)

    async def _ask(self, event: Event, correlation_id: str, produced_at_ms: int) -> LookupReply:
        reply = LookupReply(correlation_id=correlation_id, event_id=event.id, status="error")
        if self._tracing is None:
            subs, _, _ = self._router.route(event)
        else:
            subs, _, _ = self._tracing.route(None, event, self._router)
        subs = [s for s in subs if s.enabled]
        if not subs:
            reply.status = "no_subscription"
            return reply
        sub = min(subs, key=lambda s: (s.created_at, s.id))
        reply.subscription_id = sub.id
        left = self._deadline - max(0.0, time.time() - produced_at_ms / 1000)
        if left <= 0:
            reply.status = "expired"
            reply.error = f"the request was older than {self._deadline:g} s when read"
            return reply
        _, result = await self._pool.attempt(
            event, sub, trigger="lookup", deadline=left, read_limit=MAX_ANSWER_BYTES, traced=True
        )
        reply.http_status = result.status
        reply.latency_ms = round(result.duration * 1000, 3)
        if result.outcome is Outcome.TIMEOUT:
            reply.status = "timeout"
            reply.error = f"no answer within {left:.3f} s"
        elif not result.ok:
            reply.error = result.error or f"endpoint answered {result.status}"
        else:
            answer = _json_object(result.body_excerpt)
            if answer is None:
                reply.error = "the endpoint's answer is not a JSON value"
            else:
                reply.status = "answered"
                reply.answer = msgspec.Raw(answer)
        return reply


def _json_object(body: bytes) -> bytes | None:
    """The body as compact JSON, or None if it is not JSON (or was cut at the size limit)."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(value)
