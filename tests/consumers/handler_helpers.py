"""Tokens and stand-ins for the delivery side, for handler tests without a broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Handler, Rejected, Token
from service.delivery.circuit import Transition
from service.delivery.job import DeliveryJob, Ending
from service.delivery.outcomes import AttemptResult
from service.subscriptions.model import Subscription


def subscription(sub_id: str = "sub_1", **fields: Any) -> Subscription:
    """A stored subscription to every type, at an https URL, with `fields` set."""
    return Subscription(
        id=sub_id, tenant_id="acme", name="crm", url="https://example.com/hook",
        event_types=("*",), secret="whsec_" + "A" * 43 + "=",
        created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z", **fields,
    )  # fmt: skip


async def offer(handler: Handler, record: ConsumerRecord, token: Token) -> Token:
    """Offer a record as the loop does: again, shortly, while the handler rejects it (a
    partition's state being read)."""
    for _ in range(100):
        try:
            handler.submit(record, token)
        except Rejected:
            await asyncio.sleep(0.01)
        else:
            return token
    raise AssertionError("the record was never taken")


@dataclass
class Tokens:
    """Makes tokens and remembers which were finished or abandoned."""

    done: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)

    def token(self, topic: str, partition: int, offset: int) -> Token:
        return Token(
            TopicPartition(topic, partition),
            offset,
            0,
            on_done=lambda t: self.done.append(t.offset),
            on_abandon=lambda t: self.abandoned.append(t.offset),
        )


@dataclass
class RecordingQueue:
    """The delivery pool's place: keeps the jobs submitted, finished by the test."""

    jobs: list[DeliveryJob] = field(default_factory=list)
    # Subscriptions whose endpoint is at its horizon, and how long until it has room.
    full: dict[str, float] = field(default_factory=dict)

    def submit(self, job: DeliveryJob) -> None:
        self.jobs.append(job)

    def wait_before_more(self, sub_id: str) -> float | None:
        return self.full.get(sub_id)

    def room(self, sub_id: str, default: int) -> int:
        return 0 if sub_id in self.full else default

    def drains_in(self, sub_id: str) -> float:
        return 0.0


@dataclass
class RecordingFollowup:
    given_up: list[tuple[str, str]] = field(default_factory=list)

    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None:
        job.finish(Ending.DELIVERED if result.ok else Ending.RETRYING)

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        self.given_up.append((job.sub_id, reason))
        job.finish(Ending.DEAD_LETTERED)
