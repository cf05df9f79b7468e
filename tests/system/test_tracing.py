"""Spans reach a real OTLP/HTTP receiver, in the producer's trace, with the receiver joined
under each attempt; and nothing secret is in them.

The service gets its OTEL_* variables through its own settings (`otel_env`), never through
the process environment that the other tests of this worker share.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from service.delivery.circuit import State
from tests.conftest import RunningService, wait_until
from tests.helpers.otlp import OtlpReceiver, attributes
from tests.helpers.webhooks import fails_first, traced_event
from tools.tansu import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PRODUCER_SPAN}-01"
API_KEY = "k-endpoint-credential-5150"
QUERY_SECRET = "qs-credential-8086"
COLLECTOR_KEY = "collector-credential-6502"


def _hex(raw: bytes) -> str:
    return raw.hex()


def _one(spans: list[Span], **want: object) -> Span:
    found = [s for s in spans if all(attributes(s).get(k) == v for k, v in want.items())]
    assert len(found) == 1, (want, [(s.name, attributes(s)) for s in spans])
    return found[0]


async def test_spans_follow_an_event_through_a_retry_to_a_real_otlp_receiver(
    service_factory: Any,
    http_server: Any,
    producer: AIOKafkaProducer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    otlp = OtlpReceiver()
    collector = await http_server(otlp.app())
    svc: RunningService = await service_factory(
        otel_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-collector-key={COLLECTOR_KEY}",
            "OTEL_SERVICE_NAME": "switchboard-under-test",
        }
    )
    recorder = fails_first()
    base = await http_server(recorder.app())
    sub = await svc.create_subscription(
        tenant_id="acme", name="t", url=f"{base}/hook?token={QUERY_SECRET}",
        event_types=["call.ended"],
        auth={"type": "api_key", "header": "X-Api-Key", "key": API_KEY},
    )  # fmt: skip
    await producer.send_and_wait(svc.topic, traced_event("evt_spans", PARENT, "vendor=v1"))
    assert await wait_until(lambda: len(recorder.seen) == 2, within=15)
    # Stopping flushes the batch processor: every span is exported by the time it returns.
    await svc.stop()
    spans = otlp.spans()
    assert spans, "no span exported before the service stopped"
    assert {_hex(s.trace_id) for s in spans} == {TRACE_ID}
    assert otlp.resource_attributes()["service.name"] == "switchboard-under-test"
    assert all(h.get("x-collector-key") == COLLECTOR_KEY for h in otlp.headers)

    consume = _one(spans, **{"messaging.destination.name": svc.topic})
    route = next(s for s in spans if s.name == "route")
    to_deliveries = _one(spans, **{"switchboard.handoff": "delivery"})
    delivery_consume = _one(spans, **{"messaging.destination.name": svc.settings.deliveries_topic,
                                      "messaging.operation.type": "process"})  # fmt: skip
    first = _one(spans, **{"switchboard.attempt": 1})
    handoff = _one(spans, **{"switchboard.handoff": "retry"})
    retry_topic = attributes(handoff)["messaging.destination.name"]
    assert str(retry_topic).startswith(svc.settings.retry_topic_prefix + ".")
    retry_consume = _one(spans, **{"messaging.destination.name": retry_topic,
                                   "messaging.operation.type": "process"})  # fmt: skip
    second = _one(spans, **{"switchboard.attempt": 2})

    # Parent links: producer → consume → route and the handoff to the deliveries topic →
    # its consume → attempt 1 → handoff to a retry tier → the tier's consume → attempt 2.
    assert _hex(consume.parent_span_id) == PRODUCER_SPAN
    assert consume.kind == Span.SPAN_KIND_CONSUMER
    assert route.parent_span_id == consume.span_id
    assert attributes(route)["switchboard.route.matched"] == 1
    assert to_deliveries.parent_span_id == consume.span_id
    assert to_deliveries.kind == Span.SPAN_KIND_PRODUCER
    assert delivery_consume.parent_span_id == to_deliveries.span_id
    assert first.parent_span_id == delivery_consume.span_id
    assert handoff.parent_span_id == first.span_id
    assert handoff.kind == Span.SPAN_KIND_PRODUCER
    assert handoff.name == f"send {retry_topic}"
    assert retry_consume.parent_span_id == handoff.span_id
    assert second.parent_span_id == retry_consume.span_id

    for attempt, status, outcome in ((first, 503, "server_error"), (second, 204, "success")):
        attrs = attributes(attempt)
        assert attempt.kind == Span.SPAN_KIND_CLIENT
        assert attempt.name == "POST"
        assert attrs["http.request.method"] == "POST"
        assert attrs["http.response.status_code"] == status
        assert attrs["switchboard.outcome"] == outcome
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["switchboard.subscription_id"] == sub["id"]
        assert attrs["switchboard.tenant_id"] == "acme"
        assert attrs["cloudevents.event_id"] == "evt_spans"
        assert not any(k.startswith("url.") and k != "url.scheme" for k in attrs)
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert attributes(first)["error.type"] == "server_error"

    # The receiver joined the trace under each attempt, with the producer's tracestate.
    for seen, attempt in zip(recorder.seen, (first, second), strict=True):
        assert seen.headers["traceparent"] == f"00-{TRACE_ID}-{_hex(attempt.span_id)}-01"
        assert seen.headers["tracestate"] == "vendor=v1"

    # Nothing secret in what was exported: not the signing secret (nor its key bytes), the
    # endpoint's credential, the query string, a signature, or the collector's own key.
    exported = b"".join(otlp.bodies)
    secret = sub["secret"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    forbidden = [secret.encode(), key, API_KEY.encode(), QUERY_SECRET.encode(),
                 COLLECTOR_KEY.encode(), b"token="]  # fmt: skip
    forbidden += [s.headers["webhook-signature"].encode() for s in recorder.seen]
    forbidden += [s.headers["webhook-signature"].split(",", 1)[1].encode() for s in recorder.seen]
    for value in forbidden:
        assert value not in exported, value

    # The failed attempt's log line names its trace and its span.
    failed = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()
              if "delivery_attempt_failed" in line]  # fmt: skip
    assert [(f["trace_id"], f["span_id"]) for f in failed] == [(TRACE_ID, _hex(first.span_id))]


async def test_without_otel_variables_the_service_builds_no_tracer(service: RunningService) -> None:
    assert service.app.tracing is None


async def test_an_attempt_the_open_circuit_refused_and_a_test_send_have_spans(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    otlp = OtlpReceiver()
    collector = await http_server(otlp.app())
    # The circuit opens after two failures in a row, the first two events' first attempts
    # (one at a time: max_in_flight 1, so the third is asked of the circuit after them).
    svc: RunningService = await service_factory(
        otel_env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector},
        circuit_min_calls=2, circuit_failure_rate=1.0, circuit_open_seconds=60,
    )  # fmt: skip
    sub = await svc.create_subscription(
        tenant_id="acme", name="t", url=f"http://127.0.0.1:{free_port()}/nobody",
        event_types=["call.ended"], max_attempts=1, max_in_flight=1,
    )  # fmt: skip
    for i in range(3):
        parent = f"00-{TRACE_ID[:-1]}{i}-{PRODUCER_SPAN}-01"
        await producer.send_and_wait(svc.topic, traced_event(f"evt_c{i}", parent, "v=1"))
    async with svc.http.post(f"{svc.base}/v1/subscriptions/{sub['id']}/test", json={}) as r:
        sent = await r.json()
        assert r.status == 200, sent

    def refused() -> list[Span]:
        return [s for s in otlp.spans()
                if attributes(s).get("switchboard.outcome") == "circuit_open"]  # fmt: skip

    # Exported in batches: the stop below flushes whatever is left.
    assert await wait_until(lambda: svc.app.pool.circuits_in(State.OPEN) == 1, within=15)
    # The third event's attempt is refused by the open circuit (a dead letter: max_attempts 1).
    await asyncio.sleep(1)
    await svc.stop()
    (unsent,) = refused()
    assert attributes(unsent)["cloudevents.event_id"] == "evt_c2"
    assert _hex(unsent.trace_id) == TRACE_ID[:-1] + "2"
    assert unsent.status.code == unsent.status.STATUS_CODE_ERROR
    assert "http.response.status_code" not in attributes(unsent)
    test_send = _one(otlp.spans(), **{"cloudevents.event_id": sent["event_id"]})
    assert test_send.kind == Span.SPAN_KIND_CLIENT
    assert attributes(test_send)["switchboard.outcome"] == sent["outcome"]
