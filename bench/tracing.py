"""Where tracing's cost goes, per event: building its spans, and encoding them for OTLP.

    .venv/bin/python -m bench.tracing [--events 20000] [--repeats 5]

Builds, for each event, the spans a delivered event gets (consume, route, handoff to the
deliveries topic, the delivery stage's consume, the attempt) with the service's own helpers,
first with an exporter that drops them (the cost in the event loop), then encodes the finished
spans in batches of 512 as the OTLP exporter does (the cost in the exporter's thread, which
holds the GIL while it encodes). The median of --repeats runs, in microseconds of CPU per
event (process time: a busy machine inflates it far less than wall time).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.delivery.outcomes import AttemptResult, Outcome
from service.delivery.request import Prepared
from service.observability.tracing import Tracing, attempt_result, start_tracing
from service.observability.tracing_config import TracingSettings
from service.routing.router import Router
from tests.service.delivery.harness import make_event, make_sub

BATCH = 512  # the batch span processor's export size


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _noop() -> None:
    return None


async def _spans(tracing: Tracing, router: Router, events: int) -> None:
    event, ok = make_event(), AttemptResult(Outcome.SUCCESS, 204, 0.001)
    for offset in range(events):
        with tracing.consuming("voice.events", 0, offset, event) as parent:
            tracing.route(parent, event, router)
            await tracing.handoff(parent, "switchboard.deliveries", {}, _noop())
        with tracing.consuming("switchboard.deliveries", 0, offset, event) as parent:
            prepared = Prepared("POST", "https://hooks.example/h", {}, b"{}")
            with tracing.attempt(parent, prepared, 1, "sub_1", event) as span:
                attempt_result(span, ok)


def _tracing(exporter: SpanExporter) -> Tracing:
    tracing = start_tracing(TracingSettings(endpoint="http://unused/v1/traces"),
                            SimpleSpanProcessor(exporter))  # fmt: skip
    assert tracing is not None
    return tracing


async def main(args: argparse.Namespace) -> None:
    router = Router()
    router.upsert(make_sub("https://hooks.example/h"))
    build: list[float] = []
    encode: list[float] = []
    for _ in range(args.repeats):
        started = time.process_time()
        await _spans(_tracing(_Drop()), router, args.events)
        build.append((time.process_time() - started) / args.events * 1e6)
        memory = InMemorySpanExporter()
        await _spans(_tracing(memory), router, args.events)
        spans = memory.get_finished_spans()
        started = time.process_time()
        for i in range(0, len(spans), BATCH):
            encode_spans(spans[i : i + BATCH]).SerializePartialToString()
        encode.append((time.process_time() - started) / args.events * 1e6)
    print(f"{len(spans) // args.events} spans per event, median of {args.repeats} runs of "
          f"{args.events} events: build {statistics.median(build):.0f} µs per event "
          f"(runs {', '.join(f'{b:.0f}' for b in build)}), OTLP encoding "
          f"{statistics.median(encode):.0f} µs per event "
          f"(runs {', '.join(f'{e:.0f}' for e in encode)})")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
