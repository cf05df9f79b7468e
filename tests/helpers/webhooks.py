"""A receiver that records whole requests, and events with chosen data, for feature tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Recorder:
    """Answers every method on every path with `answer(seen)`; keeps what it saw."""

    answer: Callable[[Seen], web.Response] = lambda _s: web.Response(status=204)
    seen: list[Seen] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            raw_query=request.rel_url.raw_query_string,
            headers=dict(request.headers),
            body=await request.read(),
            at=time.time(),
        )
        self.seen.append(seen)
        return self.answer(seen)

    def at(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def fails_first() -> Recorder:
    """A receiver that answers 503 to the first request and 204 after: an event's second
    attempt comes back from a retry tier."""
    recorder = Recorder()
    recorder.answer = lambda _seen: web.Response(status=503 if len(recorder.seen) == 1 else 204)
    return recorder


def traced_event(event_id: str, traceparent: str, tracestate: str) -> bytes:
    """A `call.ended` CloudEvent for tenant acme carrying the distributed-tracing extension."""
    return orjson.dumps({
        "specversion": "1.0", "id": event_id, "source": "/voice", "type": "call.ended",
        "tenantid": "acme", "data": {}, "traceparent": traceparent, "tracestate": tracestate,
    })  # fmt: skip


def json_answer(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)


async def send_event(
    producer: AIOKafkaProducer,
    topic: str,
    event_type: str,
    data: dict[str, Any],
    *,
    tenant: str = "acme",
    headers: list[tuple[str, bytes]] | None = None,
    timestamp_ms: int | None = None,
) -> str:
    event_id = "evt_" + uuid.uuid4().hex
    value = orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/voice/test",
            "type": event_type,
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "tenantid": tenant,
            "data": data,
        }
    )
    await producer.send_and_wait(topic, value, headers=headers, timestamp_ms=timestamp_ms)
    return event_id
