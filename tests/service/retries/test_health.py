"""Disabling a subscription: one transition, one ops event, even from two replicas at once."""

from __future__ import annotations

import asyncio

import msgspec
import orjson

from consumers.engine.local import LocalBroker, LocalProducer
from service.delivery.netguard import AddressPolicy
from service.retries.health import EndpointHealth
from service.retries.ops import OpsEvents
from service.subscriptions.model import (
    Health,
    Subscription,
    SubscriptionCreate,
    new_subscription,
)

OPS = "switchboard.ops"


class Table:
    """One replica's view of the subscriptions table: a write is read back before it returns."""

    def __init__(self, sub: Subscription) -> None:
        self.subs = {sub.id: sub}
        self.writes = 0

    def get(self, sub_id: str) -> Subscription | None:
        return self.subs.get(sub_id)

    def health(self, sub_id: str) -> Health | None:
        return None

    async def put(self, record: Subscription) -> None:
        await asyncio.sleep(0.01)  # the round trip to the broker
        self.writes += 1
        self.subs[record.id] = record

    async def put_health(self, sub_id: str, health: Health | None) -> None:
        return None


def subscription() -> Subscription:
    req = msgspec.convert(
        {"tenant_id": "acme", "name": "crm", "url": "https://crm.example.com/hook",
         "event_types": ["*"]},
        SubscriptionCreate,
    )  # fmt: skip
    return new_subscription(req, AddressPolicy(allow_private=False))


async def test_two_410s_on_one_replica_disable_once() -> None:
    broker = LocalBroker()
    ops = OpsEvents(LocalProducer(broker), OPS)
    sub = subscription()
    table = Table(sub)
    health = EndpointHealth(table, ops)
    await asyncio.gather(*(health.disable(sub.id, "endpoint answered 410 Gone") for _ in range(2)))
    await health.disable(sub.id, "endpoint answered 410 Gone")  # later: already disabled
    await ops.close()
    assert table.writes == 1
    assert len(broker.records(OPS)) == 1


async def test_two_replicas_disabling_at_once_publish_one_event_id() -> None:
    broker = LocalBroker()
    sub = subscription()
    replicas = [EndpointHealth(Table(sub), OpsEvents(LocalProducer(broker), OPS)) for _ in "ab"]
    await asyncio.gather(*(r.disable(sub.id, "endpoint answered 410 Gone") for r in replicas))
    await asyncio.sleep(0.05)  # the notifications are produced in the background
    events = [orjson.loads(r.value) for r in broker.records(OPS)]
    assert [e["type"] for e in events] == ["endpoint.disabled"] * 2
    # Each replica saw the subscription enabled and wrote; a consumer deduplicating on the
    # CloudEvents id tells the customer once.
    assert events[0]["id"] == events[1]["id"]
    # Another version of the subscription is another transition.
    later = msgspec.structs.replace(sub, updated_at="2099-01-01T00:00:00.000Z")
    again = EndpointHealth(Table(later), OpsEvents(LocalProducer(broker), OPS))
    await again.disable(sub.id, "endpoint answered 410 Gone")
    await asyncio.sleep(0.05)
    assert orjson.loads(broker.records(OPS)[2].value)["id"] != events[0]["id"]
