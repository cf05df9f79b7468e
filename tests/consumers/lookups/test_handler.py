"""The lookup handler without a broker: the reply produced, then the record done."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumers.engine.local import LocalBroker, LocalProducer
from consumers.lookups.handler import LookupHandler
from service.delivery.netguard import AddressPolicy
from service.delivery.pool import DeliveryPool
from service.delivery.sender import Sender
from service.events.envelope import Event
from service.lookups.protocol import CORRELATION_HEADER
from service.observability.tracing import start_tracing
from service.observability.tracing_config import TracingSettings
from service.routing.router import Router
from tests.consumers.handler_helpers import Tokens
from tests.service.delivery.harness import StartServer, make_sub
from tools.receiver import wait_until

REPLIES = "calls.replies"


def inbound(event_id: str = "evt_in") -> Event:
    return Event(
        id=event_id,
        source="/voice",
        type="call.inbound",
        tenant_id="acme",
        time="2026-11-22T10:00:00Z",
        time_unix=time.time(),
        data_raw=b'{"call":{"from":"+15550000000"}}',
    )


class Setup:
    def __init__(self, sender: Sender) -> None:
        self.broker = LocalBroker()
        self.router = Router()
        self.tokens = Tokens()
        policy = AddressPolicy(allow_private=True, allow_http=True)
        self.handler = LookupHandler(
            deadline_seconds=2,
            router=self.router,
            pool=DeliveryPool(sender=sender, policy=policy),
            producer=LocalProducer(self.broker),
        )

    def replies(self) -> list[dict[str, object]]:
        if REPLIES not in self.broker.topics:
            return []
        return [orjson.loads(r.value or b"") for r in self.broker.records(REPLIES)]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    sender = Sender(policy=AddressPolicy(allow_private=True, allow_http=True),
                    max_connections=10, body_cap=1024)  # fmt: skip
    await sender.start()
    yield Setup(sender)
    await sender.close()


async def test_an_answer_is_produced_then_the_record_is_done(
    setup: Setup, http_server: StartServer
) -> None:
    async def who(_request: web.Request) -> web.Response:
        return web.json_response({"name": "Jane"})

    app = web.Application()
    app.router.add_post("/who", who)
    base = await http_server(app)
    setup.router.upsert(make_sub(base + "/who", event_types=["call.inbound"]))
    token = setup.tokens.token("voice.events", 0, 3)
    setup.handler.take(inbound(), (REPLIES, "corr-1"), int(time.time() * 1000), token)
    assert await wait_until(lambda: setup.tokens.done == [3], within=5)
    (reply,) = setup.replies()
    assert reply["status"] == "answered"
    assert reply["answer"] == {"name": "Jane"}
    (record,) = setup.broker.records(REPLIES)
    assert dict(record.headers)[CORRELATION_HEADER] == b"corr-1"


async def test_no_subscription_and_expired_are_answered_without_a_call(setup: Setup) -> None:
    setup.handler.take(
        inbound("e1"), (REPLIES, "c1"), int(time.time() * 1000), setup.tokens.token("t", 0, 1)
    )
    assert await wait_until(lambda: setup.tokens.done == [1], within=5)
    setup.router.upsert(make_sub("http://127.0.0.1:9/nobody", event_types=["call.inbound"]))
    old = int((time.time() - 5) * 1000)  # produced 5 s ago: past the 2 s deadline
    setup.handler.take(inbound("e2"), (REPLIES, "c2"), old, setup.tokens.token("t", 0, 2))
    assert await wait_until(lambda: setup.tokens.done == [1, 2], within=5)
    assert [r["status"] for r in setup.replies()] == ["no_subscription", "expired"]


async def test_a_bug_while_asking_still_replies(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_event: object) -> None:
        raise RuntimeError("a bug in routing")

    monkeypatch.setattr(setup.router, "route", broken)
    setup.handler.take(
        inbound(), (REPLIES, "c"), int(time.time() * 1000), setup.tokens.token("t", 0, 9)
    )
    assert await wait_until(lambda: setup.tokens.done == [9], within=5)
    assert [(r["status"], r["error"]) for r in setup.replies()] == [("error", "internal error")]


async def test_a_traced_lookup_is_a_span_with_its_route_and_request_under_it(
    http_server: StartServer,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = start_tracing(
        TracingSettings(endpoint="http://unused.invalid/v1/traces"), SimpleSpanProcessor(exporter)
    )
    seen: list[str] = []

    async def who(request: web.Request) -> web.Response:
        seen.append(request.headers["traceparent"])
        return web.json_response({"name": "Jane"})

    app = web.Application()
    app.router.add_post("/who", who)
    base = await http_server(app)
    policy = AddressPolicy(allow_private=True, allow_http=True)
    sender = Sender(policy=policy, max_connections=10, body_cap=1024)
    await sender.start()
    try:
        setup = Setup(sender)
        setup.handler = LookupHandler(
            deadline_seconds=2, router=setup.router, producer=LocalProducer(setup.broker),
            pool=DeliveryPool(sender=sender, policy=policy, tracing=tracing), tracing=tracing,
        )  # fmt: skip
        setup.router.upsert(make_sub(base + "/who", event_types=["call.inbound"]))
        assert tracing is not None
        event = inbound()
        with tracing.consuming("voice.events", 0, 3, event) as parent:
            setup.handler.take(event, (REPLIES, "c"), int(time.time() * 1000),
                               setup.tokens.token("voice.events", 0, 3), parent)  # fmt: skip
        assert await wait_until(lambda: setup.tokens.done == [3], within=5)
    finally:
        await sender.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    consume, lookup = spans["process voice.events"].context, spans["lookup"]
    assert consume is not None
    assert lookup.context is not None
    assert lookup.parent is not None
    assert lookup.parent.span_id == consume.span_id
    for child in (spans["route"], spans["POST"]):
        assert child.parent is not None
        assert child.parent.span_id == lookup.context.span_id
    post = spans["POST"].context
    assert post is not None
    assert seen == [f"00-{post.trace_id:032x}-{post.span_id:016x}-{post.trace_flags:02x}"]
