"""The record of a delivery that is not finished: what retry topics and dead letters hold.

It carries everything the next attempt needs and nothing secret: the subscription's id (its
URL, secret and headers are read from the table at each attempt), the event as decoded, how
many attempts were made, when the first was, when the next is due, and the last error. Its
headers repeat what a consumer needs before decoding the value (the due time) and what an
operator reading the topic with a console tool wants to see at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

from service.events.envelope import Event

HEADER_PREFIX: Final = "switchboard."
DUE_HEADER: Final = HEADER_PREFIX + "due-at-ms"

# The closed set of dead-letter reasons; each is a label value of switchboard_dead_letters.
DEAD_LETTER_REASONS: Final = (
    "exhausted",  # every attempt the schedule allows failed
    "retry_window",  # the next attempt would fall past the delivery's retry window
    "gone",  # the endpoint answered 410 Gone; the subscription was disabled
    "subscription_deleted",
    "subscription_disabled",
    "too_large",  # the retry record would not fit the broker's limit
    "schema_mismatch",  # the subscription validates strictly and the event did not fit
    "internal_error",
)


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: str
    type: str
    tenant_id: str
    time: str
    time_unix: float
    data: msgspec.Raw

    @classmethod
    def of(cls, event: Event) -> EventRecord:
        return cls(
            id=event.id,
            source=event.source,
            type=event.type,
            tenant_id=event.tenant_id,
            time=event.time,
            time_unix=event.time_unix,
            data=msgspec.Raw(event.data_raw),
        )

    def event(self) -> Event:
        return Event(
            id=self.id,
            source=self.source,
            type=self.type,
            tenant_id=self.tenant_id,
            time=self.time,
            time_unix=self.time_unix,
            data_raw=bytes(self.data),
        )


class Origin(msgspec.Struct, frozen=True):
    """Where the event was first read."""

    topic: str
    partition: int
    offset: int


class LastError(msgspec.Struct, frozen=True, kw_only=True):
    outcome: str
    status: int | None = None
    error: str | None = None
    body_excerpt: str = ""
    at: str


class PendingDelivery(msgspec.Struct, frozen=True, kw_only=True):
    subscription_id: str
    event: EventRecord
    origin: Origin
    attempts: int  # attempts made so far
    first_attempt_at: float | None = None  # unix seconds; None before the first attempt
    due_at: float = 0.0  # unix seconds
    last_error: LastError | None = None
    # Dead letters only: why, when, and (for a replayed one) which dead letter it came from.
    reason: str | None = None
    dead_lettered_at: float | None = None
    replay_of: str | None = None


@dataclass(slots=True)
class DeadLetter:
    """A dead letter as the admin API shows it; `id` names where it is stored."""

    id: str
    seq: int  # read order: the listing's order and its cursor
    pending: PendingDelivery
    replayed_at: float | None = None

    @property
    def dead_lettered_at(self) -> float:
        return self.pending.dead_lettered_at or 0.0


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(PendingDelivery)


def encode(pending: PendingDelivery) -> bytes:
    return _ENCODER.encode(pending)


def decode(value: bytes | None) -> PendingDelivery:
    """Raise msgspec.DecodeError (a ValueError) for anything that is not a pending delivery."""
    if not value:
        raise msgspec.DecodeError("empty record value")
    return _DECODER.decode(value)


def due_at_ms(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> int:
    """The due time from the record's headers; 0 (due now) when missing or unreadable."""
    for key, value in headers:
        if key == DUE_HEADER:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def retry_headers(pending: PendingDelivery) -> list[tuple[str, bytes]]:
    return [
        (DUE_HEADER, str(int(pending.due_at * 1000)).encode()),
        (HEADER_PREFIX + "subscription-id", pending.subscription_id.encode()),
        (HEADER_PREFIX + "event-id", pending.event.id.encode()),
        (HEADER_PREFIX + "attempts", str(pending.attempts).encode()),
    ]


def dead_letter_headers(pending: PendingDelivery, group_id: str) -> list[tuple[str, bytes]]:
    """What an operator filters dead letters by, readable without decoding the value."""
    error = pending.last_error
    return [
        (HEADER_PREFIX + "reason", (pending.reason or "").encode()),
        (HEADER_PREFIX + "subscription-id", pending.subscription_id.encode()),
        (HEADER_PREFIX + "tenant-id", pending.event.tenant_id.encode()),
        (HEADER_PREFIX + "event-id", pending.event.id.encode()),
        (HEADER_PREFIX + "event-type", pending.event.type.encode()),
        (HEADER_PREFIX + "origin.topic", pending.origin.topic.encode()),
        (HEADER_PREFIX + "origin.partition", str(pending.origin.partition).encode()),
        (HEADER_PREFIX + "origin.offset", str(pending.origin.offset).encode()),
        (HEADER_PREFIX + "consumer-group", group_id.encode()),
        (HEADER_PREFIX + "attempts", str(pending.attempts).encode()),
        (HEADER_PREFIX + "last-status", str(error.status or "" if error else "").encode()),
        (HEADER_PREFIX + "last-error-class", (error.outcome if error else "").encode()),
    ]
