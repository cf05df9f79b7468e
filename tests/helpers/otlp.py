"""A real OTLP/HTTP trace receiver for tests: what a collector would get, decoded with the
`opentelemetry-proto` messages."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass
class OtlpReceiver:
    """Accepts `POST /v1/traces` (protobuf, optionally gzipped) and keeps every export."""

    bodies: list[bytes] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self.export)
        return app

    async def export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        try:
            decoded = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        self.bodies.append(body)
        self.requests.append(decoded)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def spans(self) -> list[Span]:
        return [
            span
            for req in self.requests
            for resource in req.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def resource_attributes(self) -> dict[str, object]:
        return {
            a.key: value(a.value)
            for req in self.requests
            for resource in req.resource_spans
            for a in resource.resource.attributes
        }


def value(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None


def attributes(span: Span) -> dict[str, object]:
    return {a.key: value(a.value) for a in span.attributes}
