"""The producer's trace context reaches the receiver, on the first attempt and on a retry."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import RunningService, wait_until
from tests.helpers.webhooks import fails_first, traced_event

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_traceparent_travels_with_the_event_through_a_retry(
    service_factory: Any,
    http_server: Any,
    producer: AIOKafkaProducer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    svc: RunningService = await service_factory()
    recorder = fails_first()
    base = await http_server(recorder.app())
    await svc.create_subscription(tenant_id="acme", name="t", url=base + "/hook",
                                  event_types=["call.ended"])  # fmt: skip
    await producer.send_and_wait(svc.topic, traced_event("evt_traced", PARENT, "vendor=v1"))
    assert await wait_until(lambda: len(recorder.seen) == 2, within=15)
    first, retry = recorder.seen
    for seen in (first, retry):
        assert seen.headers["traceparent"] == PARENT
        assert seen.headers["tracestate"] == "vendor=v1"
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    # The failed attempt's log line names the trace, so it can be found from the trace.
    failed = [line for line in capsys.readouterr().err.splitlines()
              if "delivery_attempt_failed" in line]  # fmt: skip
    assert failed
    assert all('"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"' in line for line in failed)
