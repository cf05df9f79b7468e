"""The retry tiers' handler without a broker: rejected until due, then a job."""

from __future__ import annotations

import gc

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.deliveries.handler import DeliveryHandler
from consumers.engine.contract import Rejected, Token
from consumers.engine.local import LocalBroker, LocalProducer
from consumers.events.quarantine import Quarantine
from service.delivery.job import DeliveryJob, Ending
from service.delivery.record import (
    DeliveryRecord,
    EventRecord,
    LastError,
    Origin,
    encode,
    retry_headers,
)
from service.retries.policy import RetrySchedule
from service.subscriptions.model import Subscription
from tests.consumers.handler_helpers import RecordingQueue, Tokens
from tools.receiver import wait_until

SCHEDULE = RetrySchedule((5.0,), topic_prefix="switchboard.retry")
TIER = SCHEDULE.topics()[0]
SUB = Subscription(
    id="sub_1",
    tenant_id="acme",
    name="crm",
    url="https://example.com/hook",
    event_types=("*",),
    secret="whsec_" + "A" * 43 + "=",
    created_at="2026-01-01T00:00:00Z",
    updated_at="2026-01-01T00:00:00Z",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self) -> None:
        self.broker = LocalBroker()
        self.broker.create_topic(TIER)
        self.clock = Clock()
        self.queue = RecordingQueue()
        self.tokens = Tokens()
        self.subs = {SUB.id: SUB}
        self.handler = DeliveryHandler(
            schedule=SCHEDULE,
            pool=self.queue,
            find=self.subs.get,
            quarantine=Quarantine(LocalProducer(self.broker), "switchboard.invalid"),
            clock=self.clock,
        )

    def add(self, due_in: float, *, sub_id: str = SUB.id, attempts: int = 1) -> Token:
        delivery = DeliveryRecord(
            subscription_id=sub_id,
            event=EventRecord(
                id=f"evt_{attempts}", source="/v", type="call.ended", tenant_id="acme",
                time="2026-11-22T10:00:00Z", time_unix=0.0, data=b"{}",  # type: ignore[arg-type]
            ),
            origin=Origin("voice.events", 0, 7),
            attempts=attempts,
            first_attempt_at=self.clock.now - 60,
            due_at=self.clock.now + due_in,
            last_error=LastError(outcome="server_error", status=503, at="2026-11-22T10:00:00Z"),
        )  # fmt: skip
        return self.submit(encode(delivery), retry_headers(delivery))

    def submit(self, value: bytes, headers: list[tuple[str, bytes]]) -> Token:
        md = self.broker.append(TIER, value, headers=headers)
        return self._offer(self.broker.records(TIER)[md.offset])

    def offer_again(self) -> Token:
        """Offer the last record again, as the loop does once its retry time has come."""
        return self._offer(self.broker.records(TIER)[-1])

    def _offer(self, record: ConsumerRecord) -> Token:
        token = self.tokens.token(TIER, 0, record.offset)
        self.handler.submit(record, token)
        return token


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_a_record_is_rejected_until_due_then_becomes_a_job(setup: Setup) -> None:
    with pytest.raises(Rejected) as rejected:
        setup.add(due_in=5)
    assert rejected.value.retry_at == pytest.approx(setup.clock.now + 5, abs=0.001)
    assert setup.queue.jobs == []
    setup.clock.now += 4.99
    with pytest.raises(Rejected):
        setup.offer_again()  # never before it is due
    setup.clock.now += 0.01
    token = setup.offer_again()
    (job,) = setup.queue.jobs
    assert (job.sub_id, job.attempts, job.origin.offset) == (SUB.id, 1, 7)
    assert job.last_error is not None
    assert job.last_error.status == 503
    assert setup.tokens.done == []
    job.finish(Ending.DELIVERED)
    assert setup.tokens.done == [token.offset]


def test_a_finished_job_is_freed_at_once_not_left_to_the_cyclic_collector(setup: Setup) -> None:
    # A job in a reference cycle lives, with its event's bytes, until a collection finds it:
    # at volume that made the full collections a tenth of the service's CPU, and its peak RSS.
    gc.collect()
    gc.disable()
    try:
        setup.add(due_in=0)
        (job,) = setup.queue.jobs
        job.finish(Ending.DELIVERED)
        setup.queue.jobs.clear()
        del job
        assert not [o for o in gc.get_objects() if isinstance(o, DeliveryJob)]
    finally:
        gc.enable()


async def test_a_record_it_cannot_read_is_quarantined_and_the_tier_moves_on(
    setup: Setup,
) -> None:
    bad = setup.submit(b"not a delivery", [("switchboard.due-at-ms", b"0")])
    good = setup.add(due_in=0)
    assert [j.sub_id for j in setup.queue.jobs] == [SUB.id]
    assert await wait_until(lambda: bad.offset in setup.tokens.done, within=2)
    (copy,) = setup.broker.records("switchboard.invalid")
    assert dict(copy.headers)["switchboard.reason"] == b"bad_delivery_record"
    assert good.open


def test_a_deleted_subscription_still_goes_to_the_pool_which_dead_letters_it(
    setup: Setup,
) -> None:
    setup.add(due_in=0, sub_id="sub_gone")
    (job,) = setup.queue.jobs
    assert job.sub is None


def test_a_revoke_gives_up_the_deliveries_not_yet_sent_and_keeps_those_on_the_wire(
    setup: Setup,
) -> None:
    on_the_wire = setup.add(due_in=0)
    queued = setup.add(due_in=0)
    sent_job, queued_job = setup.queue.jobs
    sent_job.attempting(setup.clock.now)
    setup.handler.revoked([TopicPartition(TIER, 0)])
    # The queued one is the next owner's to make; the one on the wire finishes here.
    assert setup.tokens.abandoned == [queued.offset]
    assert queued_job.done
    assert on_the_wire.open
    sent_job.finish(Ending.DELIVERED)
    assert setup.tokens.done == [on_the_wire.offset]


def test_a_delivery_to_an_endpoint_at_its_horizon_waits_in_kafka(setup: Setup) -> None:
    setup.queue.full[SUB.id] = 0.5
    with pytest.raises(Rejected) as rejected:
        setup.add(due_in=0)
    assert rejected.value.retry_at == pytest.approx(setup.clock.now + 0.5)
    assert setup.queue.jobs == []
    del setup.queue.full[SUB.id]  # the endpoint has room again
    setup.offer_again()
    assert [j.sub_id for j in setup.queue.jobs] == [SUB.id]
