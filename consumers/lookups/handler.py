"""Pre-call lookups: a request event answered synchronously, the answer produced to a topic.

When a call comes in, the platform asks the customer's system who is calling before the
agent speaks. Upstream produces the request as an ordinary event (usually `call.inbound`)
with two record headers:

    switchboard.reply-topic      where the answer goes
    switchboard.correlation-id   copied to the answer, so the caller can match it

The event is routed like any other (tenant, types, filters); the oldest matching
subscription answers. It is called once, now, under the lookup deadline (default 2 s,
counted from when the request was produced), with no retry: a late answer is no answer.
The reply (`LookupReply`) always comes, with a status: `answered` (the endpoint's JSON is in
`answer`), `timeout`, `error`, `no_subscription`, or `expired` (the request was already
older than the deadline when read, so the endpoint is not called). The request's offset is
committed once the reply is acknowledged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import orjson
import structlog
from aiokafka import AIOKafkaProducer

from consumers.engine.group_loop import produce
from service.config import Settings
from service.delivery.outcomes import Outcome
from service.delivery.pool import DeliveryPool
from service.events.envelope import Event
from service.observability import metrics
from service.routing.router import Router

log = structlog.get_logger("switchboard.lookups")

REPLY_TOPIC_HEADER: Final = "switchboard.reply-topic"
CORRELATION_HEADER: Final = "switchboard.correlation-id"
# An answer is a caller's context for one call: names, account, appointments. Not a file.
MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_CORRELATION_ID: Final = 256
_TOPIC_NAME: Final = re.compile(r"[A-Za-z0-9._\-]{1,249}")
_ENCODER: Final = msgspec.json.Encoder()
_REQUEST_HEADERS: Final = frozenset((REPLY_TOPIC_HEADER, CORRELATION_HEADER))


class LookupReply(msgspec.Struct, kw_only=True):
    correlation_id: str
    event_id: str
    status: str  # answered, timeout, error, no_subscription, expired
    subscription_id: str | None = None
    http_status: int | None = None
    latency_ms: float | None = None
    answer: msgspec.Raw | None = None
    error: str | None = None


class BadRequest(ValueError):
    """The reply headers cannot be used; the record is quarantined with this reason."""


def reply_headers(
    headers: Sequence[tuple[str, bytes]], settings: Settings
) -> tuple[str, str] | None:
    """(reply topic, correlation id) when the record is a lookup request, else None.
    Raises BadRequest for headers that cannot be honoured."""
    if not headers:
        return None  # most records: not a request, and this runs for every one of them
    found = {k: v for k, v in headers if k in _REQUEST_HEADERS}
    if not found:
        return None
    try:
        topic = found[REPLY_TOPIC_HEADER].decode()
        correlation = found[CORRELATION_HEADER].decode()
    except KeyError as missing:
        raise BadRequest(f"header {missing.args[0]} is required with the other") from None
    except UnicodeDecodeError:
        raise BadRequest("reply headers must be UTF-8") from None
    if not _TOPIC_NAME.fullmatch(topic):
        raise BadRequest(f"{REPLY_TOPIC_HEADER} is not a topic name")
    # A request must never make the service write into its own state or event topics.
    own = settings.internal_topics()
    if (
        topic in own
        or topic in settings.event_topics
        or topic.startswith(settings.retry_topic_prefix + ".")
    ):
        raise BadRequest(f"{REPLY_TOPIC_HEADER} names one of the service's own topics")
    if not correlation or len(correlation) > MAX_CORRELATION_ID or not correlation.isprintable():
        raise BadRequest(f"{CORRELATION_HEADER}: 1..{MAX_CORRELATION_ID} printable characters")
    return topic, correlation


class Lookups:
    def __init__(
        self,
        settings: Settings,
        *,
        router: Router,
        pool: DeliveryPool,
        producer: AIOKafkaProducer,
    ) -> None:
        self._deadline = settings.lookup_deadline_seconds
        self._router = router
        self._pool = pool
        self._producer = producer

    async def answer(
        self, event: Event, reply_topic: str, correlation_id: str, produced_at_ms: int
    ) -> None:
        """Call the endpoint and produce the reply; returns once the reply is acknowledged."""
        started = time.perf_counter()
        reply = await self._ask(event, correlation_id, produced_at_ms)
        await produce(
            self._producer,
            reply_topic,
            "lookup_reply",
            key=correlation_id.encode(),
            value=_ENCODER.encode(reply),
            headers=[(CORRELATION_HEADER, correlation_id.encode())],
        )
        metrics.LOOKUPS.labels(reply.status).inc()
        metrics.LOOKUP_DURATION.observe(time.perf_counter() - started)

    async def _ask(self, event: Event, correlation_id: str, produced_at_ms: int) -> LookupReply:
        reply = LookupReply(correlation_id=correlation_id, event_id=event.id, status="error")
        subs, _ = self._router.route(event)
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
            event, sub, trigger="lookup", deadline=left, read_limit=MAX_ANSWER_BYTES
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
