"""The events handler without a broker: local producer, plain tokens."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumers.engine.contract import Token
from consumers.engine.local import LocalBroker, LocalProducer
from consumers.events.handler import EventHandler
from consumers.events.handoff import Handoff
from consumers.events.quarantine import Quarantine
from consumers.lookups.handler import LookupHandler
from service.config import Settings
from service.delivery.netguard import AddressPolicy
from service.delivery.pool import DeliveryPool
from service.delivery.record import decode, due_at_ms
from service.delivery.sender import Sender
from service.routing.router import Router
from service.subscriptions.model import Subscription
from tests.consumers.handler_helpers import RecordingFollowup, Tokens
from tools.receiver import wait_until

TOPIC = "voice.events"
INVALID = "switchboard.invalid"
DELIVERIES = "switchboard.deliveries"


def subscription(sub_id: str, types: tuple[str, ...], **fields: object) -> Subscription:
    return Subscription(
        id=sub_id,
        tenant_id="acme",
        name=sub_id,
        url="https://example.com/hook",
        event_types=types,
        secret="whsec_" + "A" * 43 + "=",
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        **fields,  # type: ignore[arg-type]
    )


class Setup:
    def __init__(self) -> None:
        self.broker = LocalBroker()
        self.broker.create_topic(TOPIC)
        self.producer = LocalProducer(self.broker)
        self.router = Router()
        self.followup = RecordingFollowup()
        self.tokens = Tokens()
        policy = AddressPolicy(allow_private=False)
        settings = Settings(admin_token="t" * 16)
        self.handler = EventHandler(
            settings,
            router=self.router,
            handoff=Handoff(self.producer, DELIVERIES),
            followup=self.followup,
            quarantine=Quarantine(self.producer, INVALID),
            lookups=LookupHandler(
                deadline_seconds=2,
                router=self.router,
                pool=DeliveryPool(
                    sender=Sender(policy=policy, max_connections=1, body_cap=0), policy=policy
                ),
                producer=self.producer,
            ),
        )

    def submit(self, value: bytes) -> int:
        return self.submit_token(value).offset

    def submit_token(self, value: bytes) -> Token:
        md = self.broker.append(TOPIC, value)
        record: ConsumerRecord = self.broker.records(TOPIC)[md.offset]
        token = self.tokens.token(TOPIC, 0, md.offset)
        self.handler.submit(record, token)
        return token


def event(event_type: str, data: dict[str, object] | None = None) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": "evt_1",
            "source": "/voice",
            "type": event_type,
            "tenantid": "acme",
            "data": data or {"call": {"sid": "CA1"}},
        }
    )


@pytest.fixture
def setup() -> Setup:
    return Setup()


def handed_off(setup: Setup) -> list[tuple[bytes | None, str, int]]:
    """The deliveries topic: (key, subscription id, origin offset) of each record."""
    if DELIVERIES not in setup.broker.topics:
        return []
    out = []
    for record in setup.broker.records(DELIVERIES):
        delivery = decode(record.value)
        assert due_at_ms(record.headers) == 0  # a first attempt is due at once
        assert delivery.attempts == 0
        out.append((record.key, delivery.subscription_id, delivery.origin.offset))
    return out


async def test_a_record_is_done_once_a_delivery_record_per_match_is_acknowledged(
    setup: Setup,
) -> None:
    setup.router.upsert(subscription("sub_a", ("call.ended",)))
    setup.router.upsert(subscription("sub_b", ("call.*",)))
    setup.router.upsert(subscription("sub_c", ("contact.*",)))
    setup.producer.fail_next(KafkaConnectionError())  # the first send is refused
    offset = setup.submit(event("call.ended"))
    await asyncio.sleep(0.1)
    assert setup.tokens.done == []  # a delivery record is not acknowledged yet: it waits
    assert await wait_until(lambda: setup.tokens.done == [offset], within=5)
    # Keyed by subscription: the partition's owner makes every delivery to it.
    assert sorted(handed_off(setup)) == [(b"sub_a", "sub_a", offset), (b"sub_b", "sub_b", offset)]


async def test_an_event_no_subscription_wants_is_done_at_once(setup: Setup) -> None:
    offset = setup.submit(event("call.ended"))
    assert setup.tokens.done == [offset]
    assert handed_off(setup) == []


async def test_a_strict_subscription_dead_letters_what_does_not_fit(setup: Setup) -> None:
    setup.router.upsert(subscription("sub_s", ("call.ended",), strict_schema=True))
    offset = setup.submit(event("call.ended", {"call": "not an object"}))
    assert await wait_until(lambda: setup.tokens.done == [offset], within=2)
    assert setup.followup.given_up == [("sub_s", "schema_mismatch")]
    assert handed_off(setup) == []


async def test_an_invalid_record_is_done_only_once_quarantined(setup: Setup) -> None:
    setup.producer.fail_next(KafkaConnectionError())
    offset = setup.submit(b"{not json")
    await asyncio.sleep(0.1)
    assert setup.tokens.done == []  # the broker refused the copy: the record waits
    assert await wait_until(lambda: setup.tokens.done == [offset], within=5)
    (copy,) = setup.broker.records(INVALID)
    headers = dict(copy.headers)
    assert copy.value == b"{not json"
    assert headers["switchboard.reason"] == b"malformed_json"
    assert headers["switchboard.origin.offset"] == str(offset).encode()


async def test_an_abandoned_record_cancels_its_handoff(setup: Setup) -> None:
    setup.router.upsert(subscription("sub_a", ("call.ended",)))
    setup.producer.fail_next(KafkaConnectionError())  # the handoff waits to try again
    token = setup.submit_token(event("call.ended"))
    await asyncio.sleep(0.05)
    token.abandon()  # its partition was revoked past the grace period
    await asyncio.sleep(1.0)  # past the produce backoff: a live handoff would have written
    assert handed_off(setup) == []
    assert setup.tokens.done == []
    assert setup.tokens.abandoned == [token.offset]


async def test_a_routing_bug_quarantines_the_record_instead_of_losing_it(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_event: object) -> None:
        raise RuntimeError("a bug in routing")

    monkeypatch.setattr(setup.router, "route", broken)
    offset = setup.submit(event("call.ended"))
    assert await wait_until(lambda: setup.tokens.done == [offset], within=2)
    (copy,) = setup.broker.records(INVALID)
    assert dict(copy.headers)["switchboard.reason"] == b"internal_error"


async def test_a_delivery_record_too_large_for_the_broker_is_a_dead_letter(setup: Setup) -> None:
    setup.router.upsert(subscription("sub_a", ("call.ended",)))
    setup.producer.fail_next(MessageSizeTooLargeError())
    offset = setup.submit(event("call.ended"))
    assert await wait_until(lambda: setup.tokens.done == [offset], within=2)
    assert setup.followup.given_up == [("sub_a", "too_large")]
    assert handed_off(setup) == []


async def test_delivery_records_are_handed_off_in_the_order_the_events_were_read(
    setup: Setup,
) -> None:
    setup.router.upsert(subscription("sub_a", ("call.ended",)))
    setup.router.upsert(subscription("sub_b", ("call.*",)))
    offsets = [setup.submit(event("call.ended")) for _ in range(50)]
    assert await wait_until(lambda: sorted(setup.tokens.done) == offsets, within=5)
    for sub_id in ("sub_a", "sub_b"):
        assert [o for _, s, o in handed_off(setup) if s == sub_id] == offsets


async def test_a_record_abandoned_before_its_handoff_is_written_is_not_handed_off(
    setup: Setup,
) -> None:
    setup.router.upsert(subscription("sub_a", ("call.ended",)))
    first = setup.submit_token(event("call.ended"))
    second = setup.submit_token(event("call.ended"))
    first.abandon()  # revoked before the writer ran: its next owner hands it off
    assert await wait_until(lambda: setup.tokens.done == [second.offset], within=5)
    assert handed_off(setup) == [(b"sub_a", "sub_a", second.offset)]
    assert setup.tokens.abandoned == [first.offset]
