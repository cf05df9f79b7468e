"""Spans with the OpenTelemetry SDK, exported over OTLP/HTTP: setup and the span helpers.

The service owns its `TracerProvider`; the process-global one is never set, so several
service instances in one process (the tests) each export to their own endpoint. With tracing
off (the default) the service holds no `Tracing` at all: each traced place checks for None
once and builds no span, context or attribute dict.

The spans of one event: `process <topic>` (consumer; its parent is the event's own
`traceparent`), `route`, `send <deliveries topic>` (producer: the handoff to the delivery
stage), `process <deliveries topic>`, one `POST`/`PUT`/… per attempt (client), `send <tier
topic>` or `send <dead-letter topic>` after a failure, and `lookup` for a pre-call lookup.
Each record written in a handoff carries the handoff span's context, so the `process` span of
whoever reads it hangs under that span; each webhook request's `traceparent` names its attempt
span, so a receiver's span hangs under the attempt.

Attributes never hold a URL (a path or query string may hold a credential), a header value,
a signature, a secret or an error message (which may quote any of them): the endpoint is
`server.address` and `server.port` alone. Tenant, subscription and event ids are attributes:
a span is one request's record, like a log line that names them already, not a time series
whose every label value costs a series; an SRE following a call needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from service import __version__
from service.delivery.outcomes import AttemptResult
from service.delivery.record import EventRecord
from service.delivery.request import Prepared
from service.events.envelope import Event
from service.events.trace import TraceContext, trace_context
from service.observability.tracing_config import TracingSettings
from service.routing.router import Routed, Router

log = structlog.get_logger("switchboard.tracing")

_PROPAGATOR: Final = TraceContextTextMapPropagator()
# At shutdown the last spans get this long to reach the collector; a collector that is away
# must not hold the drain (Kubernetes' grace period is for the deliveries).
FLUSH_SECONDS: Final = 5.0
_T = TypeVar("_T")
Attributes = dict[str, AttributeValue]


class Tracing:
    """The tracer of one service instance and the spans it makes."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("switchboard", __version__)

    @contextmanager
    def consuming(self, topic: str, partition: int, offset: int, event: Event) -> Iterator[Context]:
        """The span of one record's processing, current inside the block (log lines carry
        its ids); yields the context its children hang from. Its parent is the event's
        trace context: the producer's span, or for a retry record the handoff span."""
        attributes: Attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            "messaging.message.id": event.id,
            **event_attributes(event),
        }
        with self._tracer.start_as_current_span(
            f"process {topic}", _incoming(event), SpanKind.CONSUMER, attributes
        ) as span:
            yield trace.set_span_in_context(span)

    def route(self, parent: Context | None, event: Event, router: Router) -> Routed:
        """`router.route(event)` inside a `route` span that says how many it matched;
        `parent` None: under the current span."""
        with self._tracer.start_as_current_span("route", parent) as span:
            routed = router.route(event)
            subs, refused, filtered = routed
            span.set_attributes({"switchboard.route.matched": len(subs),
                                 "switchboard.route.refused": len(refused),
                                 "switchboard.route.filtered": len(filtered)})  # fmt: skip
            return routed

    @contextmanager
    def attempt(
        self, parent: Context | None, prepared: Prepared, number: int, sub_id: str, event: Event
    ) -> Iterator[Span]:
        """One HTTP request to an endpoint (client span), current inside the block; the
        request's `traceparent` names it, so the receiver's span hangs under it. `parent`
        None: under the current span."""
        attributes = attempt_attributes(prepared.method, prepared.url, number, sub_id, event)
        with self._tracer.start_as_current_span(
            prepared.method, parent, SpanKind.CLIENT, attributes
        ) as span:
            inject(span, prepared.headers)
            yield span

    def lookup(
        self, parent: Context | None, event: Event, work: Coroutine[Any, Any, _T]
    ) -> Coroutine[Any, Any, _T]:
        """`work` (a pre-call lookup: route, attempt, reply) inside a `lookup` span, current
        while it runs, so that its route and attempt spans hang under it."""
        span = self._tracer.start_span("lookup", parent, SpanKind.INTERNAL,
                                       event_attributes(event))  # fmt: skip
        return _within(span, work)

    def handoff(
        self,
        parent: Context | None,
        topic: str,
        attributes: Attributes,
        work: Coroutine[Any, Any, _T],
    ) -> Coroutine[Any, Any, _T]:
        """`work` (a produce to the deliveries topic, a retry tier or the dead letters)
        inside a producer span, current while it runs: the record it writes carries that
        span (`carrying`)."""
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            **attributes,
        }
        span = self._tracer.start_span(f"send {topic}", parent, SpanKind.PRODUCER, attributes)
        return _within(span, work)

    async def close(self, within: float = FLUSH_SECONDS) -> None:
        """Export what is queued and stop, waiting at most `within` seconds. The SDK's
        shutdown blocks and may outlast its own timeout (an export under way is not
        interrupted), so it runs in a daemon thread that the process need not wait for."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def shutdown() -> None:
            try:
                self._provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=shutdown, name="tracing-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), within)
        except TimeoutError:
            log.warning("tracing_flush_timeout", within=within)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _within(span: Span, work: Coroutine[Any, Any, _T]) -> _T:
    """Run `work` with `span` current (its log lines and records carry it); end it after."""
    with trace.use_span(span, end_on_exit=True):
        return await work


def start_tracing(
    settings: TracingSettings | None, processor: SpanProcessor | None = None
) -> Tracing | None:
    """The service's tracing, or None when it is off. `processor` replaces the OTLP batch
    processor (unit tests give an in-memory exporter's)."""
    if settings is None:
        return None
    resource = Resource.create(
        {
            **dict(settings.resource_attributes),
            "service.name": settings.service_name,
            "service.version": __version__,
        }
    )
    provider = TracerProvider(resource=resource, sampler=_sampler(settings))
    if processor is None:
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint,
            headers=dict(settings.headers),
            timeout=settings.timeout_seconds,
        )
        processor = BatchSpanProcessor(
            exporter,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay_ms,
            max_export_batch_size=settings.max_export_batch_size,
        )
    provider.add_span_processor(processor)
    return Tracing(provider)


def _sampler(settings: TracingSettings) -> sampling.Sampler:
    ratio = settings.sampler_ratio
    samplers: dict[str, Callable[[], sampling.Sampler]] = {
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "parentbased_always_on": lambda: sampling.DEFAULT_ON,
        "parentbased_always_off": lambda: sampling.DEFAULT_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "parentbased_traceidratio": lambda: sampling.ParentBasedTraceIdRatio(ratio),
    }
    return samplers[settings.sampler]()


def _incoming(event: Event) -> Context:
    """The event's trace context as a parent; an empty context (a new trace) without one."""
    if event.trace is None:
        return Context()
    return _PROPAGATOR.extract(event.trace.headers(), Context())


def event_attributes(event: Event) -> Attributes:
    return {
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
        "switchboard.tenant_id": event.tenant_id,
    }


def attempt_attributes(
    method: str, url: object, number: int, sub_id: str, event: Event
) -> Attributes:
    """HTTP client attributes of one attempt: the host and port, never the URL itself."""
    parts = urlsplit(str(url))
    out: Attributes = {
        "http.request.method": method,
        "url.scheme": parts.scheme,
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        # The semantic conventions count re-sends of one request; the first attempt is 0.
        "http.request.resend_count": max(0, number - 1),
        "switchboard.attempt": number,
        "switchboard.subscription_id": sub_id,
        **event_attributes(event),
    }
    return out


def attempt_result(span: Span, result: AttemptResult) -> None:
    """What came of an attempt: its status, Switchboard's outcome class, and for a failure
    `error.type` (the outcome, never the error message, which may quote a URL)."""
    if result.status is not None:
        span.set_attribute("http.response.status_code", result.status)
    span.set_attribute("switchboard.outcome", result.outcome.value)
    if not result.ok:
        span.set_attribute("error.type", result.outcome.value)
        span.set_status(StatusCode.ERROR, result.outcome.value)


def context_of(span: Span) -> Context:
    """A context whose current span is `span`: the parent of the spans that follow it."""
    return trace.set_span_in_context(span, Context())


def inject(span: Span, headers: dict[str, str]) -> None:
    """`traceparent` (and `tracestate`) naming `span`, so a receiver's span hangs under it."""
    _PROPAGATOR.inject(headers, context_of(span))


def carrying(record: EventRecord) -> EventRecord:
    """The event as a record written now carries it: under the current (handoff) span, so
    that the spans of whoever reads the record hang under that span."""
    return msgspec.structs.replace(record, trace=carried(record.trace))


def carried(trace_ctx: TraceContext | None) -> TraceContext | None:
    """The trace context a record written now carries: the current span's (a handoff span),
    keeping the event's tracestate; the event's own when no span is current."""
    span_ctx = trace.get_current_span().get_span_context()
    if not span_ctx.is_valid:
        return trace_ctx
    headers: dict[str, str] = {}
    inject(trace.get_current_span(), headers)
    return trace_context(headers["traceparent"], headers.get("tracestate"))
