"""The first path end to end: a subscription, an event on Kafka, a signed delivery."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from tests.conftest import ReceiverServer, RunningService, produce_events, wait_until


async def test_event_is_delivered_signed(
    service: RunningService, receiver: ReceiverServer, producer: AIOKafkaProducer
) -> None:
    sub = await service.create_subscription(
        tenant_id="acme", name="CRM", url=receiver.url("crm"), event_types=["call.ended"]
    )
    receiver.receiver.secrets["crm"] = sub["secret"]
    ids = await produce_events(producer, service.topic, tenant="acme", types=["call.ended"])
    assert await wait_until(lambda: len(receiver.receiver.received) == 1, within=20)
    got = receiver.receiver.received[0]
    assert got.event_id == ids[0]
    assert got.verified
