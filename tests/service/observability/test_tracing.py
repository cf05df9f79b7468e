"""The span helpers, on the SDK's in-memory exporter; shutdown against real loopback
collectors (one that answers, one that never does)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.delivery.outcomes import AttemptResult, Outcome
from service.delivery.request import Prepared
from service.events.trace import trace_context
from service.observability.logs import add_span_ids
from service.observability.tracing import (
    Tracing,
    attempt_attributes,
    attempt_result,
    carried,
    context_of,
    start_tracing,
)
from service.observability.tracing_config import TracingSettings
from service.routing.router import Router
from tests.helpers.otlp import OtlpReceiver
from tests.service.delivery.harness import StartServer, make_event, make_sub

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Tracing:
    settings = TracingSettings(endpoint="http://unused.invalid/v1/traces")
    started = start_tracing(settings, SimpleSpanProcessor(exporter))
    assert started is not None
    return started


def by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def test_off_is_none() -> None:
    assert start_tracing(None) is None


def test_the_consume_span_continues_the_events_trace_and_is_current(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    event = make_event()
    event.trace = trace_context(PARENT, "vendor=v1")
    with tracing.consuming("voice.events", 2, 41, event) as parent:
        current = trace.get_current_span()
        assert current.get_span_context().trace_id == int(TRACE_ID, 16)
        assert trace.get_current_span(parent) is current
    span = by_name(exporter, "process voice.events")
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert span.parent.is_remote
    assert span.attributes is not None
    assert span.attributes["messaging.destination.partition.id"] == "2"
    assert span.attributes["messaging.kafka.offset"] == 41
    assert span.attributes["cloudevents.event_id"] == "evt_1"
    assert span.attributes["switchboard.tenant_id"] == "acme"
    assert span.context is not None
    assert span.context.trace_state.to_header() == "vendor=v1"


def test_an_event_without_trace_context_starts_a_trace(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with tracing.consuming("voice.events", 0, 0, make_event()):
        pass
    span = by_name(exporter, "process voice.events")
    assert span.parent is None


def test_route_counts_what_it_matched(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    router = Router()
    router.upsert(make_sub("https://a.example/h"))
    with tracing.consuming("t", 0, 0, make_event()) as parent:
        subs, _, _ = tracing.route(parent, make_event(), router)
    assert len(subs) == 1
    route, consume = by_name(exporter, "route"), by_name(exporter, "process t")
    assert route.parent is not None
    assert consume.context is not None
    assert route.parent.span_id == consume.context.span_id
    assert route.attributes is not None
    assert route.attributes["switchboard.route.matched"] == 1


def test_an_attempt_names_itself_in_the_requests_traceparent(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    event = make_event()
    event.trace = trace_context(PARENT, "vendor=v1")
    prepared = Prepared("POST", "https://u:pw@hooks.example:8443/p/s3cret?token=q1", {
        "traceparent": PARENT, "webhook-signature": "v1,sig"}, b"{}")  # fmt: skip
    with tracing.consuming("t", 0, 0, event) as parent:
        pass
    with tracing.attempt(parent, prepared, 3, "sub_1", event) as span:
        attempt_result(span, AttemptResult(Outcome.SERVER_ERROR, 503, 0.01, "boom at /p/s3cret"))
    attempt = by_name(exporter, "POST")
    assert attempt.context is not None
    assert prepared.headers["traceparent"] == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
    assert prepared.headers["tracestate"] == "vendor=v1"
    assert attempt.kind is SpanKind.CLIENT
    assert attempt.attributes is not None
    attrs = dict(attempt.attributes)
    assert attrs["server.address"] == "hooks.example"
    assert attrs["server.port"] == 8443
    assert attrs["http.response.status_code"] == 503
    assert attrs["switchboard.outcome"] == "server_error"
    assert attrs["error.type"] == "server_error"
    assert attrs["switchboard.attempt"] == 3
    assert attrs["http.request.resend_count"] == 2
    assert attempt.status.status_code is StatusCode.ERROR
    shown = repr(attrs) + repr(attempt.status.description)
    for secret in ("s3cret", "token", "pw", "sig", "boom"):
        assert secret not in shown


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)


@given(user=_WORD, password=_WORD, path=st.lists(_WORD, max_size=4), key=_WORD, value=_WORD)
def test_attempt_attributes_hold_the_host_never_the_rest_of_the_url(
    user: str, password: str, path: list[str], key: str, value: str
) -> None:
    marker = "zq"  # not in the host, the scheme or any attribute name
    segments = "/".join(marker + p for p in path)
    url = f"https://{marker}{user}:{marker}{password}@hooks.example/{segments}?{marker}{key}={marker}{value}"
    attrs = attempt_attributes("POST", url, 1, "sub_1", make_event())
    assert attrs["server.address"] == "hooks.example"
    assert attrs["server.port"] == 443
    assert not any(marker in str(v) for v in attrs.values())


async def test_a_handoff_span_is_current_in_its_step_and_its_record_carries_it(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    event = make_event()
    event.trace = trace_context(PARENT, "vendor=v1")
    with tracing.consuming("t", 0, 0, event) as parent:
        pass
    seen = []

    async def produce() -> None:
        seen.append(carried(event.trace))

    await tracing.handoff(parent, "switchboard.retry.5s", {"switchboard.handoff": "retry"},
                          produce())  # fmt: skip
    handoff = by_name(exporter, "send switchboard.retry.5s")
    assert handoff.kind is SpanKind.PRODUCER
    assert handoff.context is not None
    assert handoff.parent is not None
    consume = by_name(exporter, "process t").context
    assert consume is not None
    assert handoff.parent.span_id == consume.span_id
    (record_trace,) = seen
    assert record_trace is not None
    assert record_trace.traceparent == f"00-{TRACE_ID}-{handoff.context.span_id:016x}-01"
    assert record_trace.tracestate == "vendor=v1"


def test_carried_without_a_current_span_is_the_events_own() -> None:
    own = trace_context(PARENT, None)
    assert carried(own) is own
    assert carried(None) is None


async def test_a_lookup_span_is_the_parent_of_what_runs_in_it(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    router = Router()
    event = make_event()

    async def ask() -> None:
        tracing.route(None, event, router)

    with tracing.consuming("t", 0, 0, event) as parent:
        pass
    await tracing.lookup(parent, event, ask())
    lookup, route = by_name(exporter, "lookup"), by_name(exporter, "route")
    assert route.parent is not None
    assert lookup.context is not None
    assert route.parent.span_id == lookup.context.span_id


def test_a_sampled_out_trace_exports_nothing_but_still_propagates(
    exporter: InMemorySpanExporter,
) -> None:
    settings = TracingSettings(endpoint="http://unused.invalid/v1/traces", sampler="always_off")
    tracing = start_tracing(settings, SimpleSpanProcessor(exporter))
    assert tracing is not None
    prepared = Prepared("POST", "https://hooks.example/", {}, b"{}")
    with tracing.attempt(None, prepared, 1, "sub_1", make_event()):
        pass
    assert exporter.get_finished_spans() == ()
    flags = int(prepared.headers["traceparent"].rsplit("-", 1)[1], 16)
    assert not flags & 1  # not sampled: the receiver need not record it either


def test_log_lines_carry_the_current_spans_ids(tracing: Tracing) -> None:
    assert add_span_ids(None, "info", {"event": "x"}) == {"event": "x"}
    event = make_event()
    event.trace = trace_context(PARENT, None)
    with tracing.consuming("t", 0, 0, event):
        line = dict(add_span_ids(None, "info", {"event": "x"}))
        span_id = trace.get_current_span().get_span_context().span_id
    assert line == {"event": "x", "trace_id": TRACE_ID, "span_id": f"{span_id:016x}"}


def test_the_span_context_helper_makes_a_parent(tracing: Tracing) -> None:
    with tracing.consuming("t", 0, 0, make_event()):
        span = trace.get_current_span()
    assert trace.get_current_span(context_of(span)) is span


async def test_close_exports_what_is_queued(http_server: StartServer) -> None:
    otlp = OtlpReceiver()
    endpoint = await http_server(otlp.app()) + "/v1/traces"
    # A schedule far longer than the test: only the shutdown can have exported the span.
    tracing = start_tracing(TracingSettings(endpoint=endpoint, schedule_delay_ms=60_000))
    assert tracing is not None
    with tracing.consuming("t", 0, 0, make_event()):
        pass
    await tracing.close(within=5)
    assert [s.name for s in otlp.spans()] == ["process t"]


async def test_close_gives_up_on_a_collector_that_never_answers(
    http_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", hang)
    base = await http_server(app)
    try:
        settings = TracingSettings(endpoint=base + "/v1/traces", timeout_seconds=3)
        tracing = start_tracing(settings)
        assert tracing is not None
        with tracing.consuming("t", 0, 0, make_event()):
            pass
        started = time.monotonic()
        await tracing.close(within=0.3)
        assert time.monotonic() - started < 1.5
        assert "tracing_flush_timeout" in capsys.readouterr().err
    finally:
        release.set()
