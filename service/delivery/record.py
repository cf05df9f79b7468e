"""A delivery that is not finished, as retry topics and dead letters hold it.

It carries everything the next attempt needs and nothing secret: the subscription's id (its
URL, secret and headers are read from the table at each attempt), the event as decoded, how
many attempts were made, when the first was, when the next is due, and the last error. Its
headers repeat what a consumer needs before decoding the value (the due time) and what an
operator reading the topic with a console tool wants to see at a glance.
"""

from __future__ import annotations

from typing import Final

import msgspec

from service.events.envelope import Event
from service.events.trace import TraceContext

HEADER_PREFIX: Final = "switchboard."
DUE_HEADER: Final = HEADER_PREFIX + "due-at-ms"
SUBSCRIPTION_HEADER: Final = HEADER_PREFIX + "subscription-id"


class EventRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    source: str
    type: str
    tenant_id: str
    time: str
    time_unix: float
    data: msgspec.Raw
    # The producer's trace context, sent on every attempt (service/events/trace.py).
    trace: TraceContext | None = None

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
            trace=event.trace,
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
            trace=self.trace,
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


class DeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    subscription_id: str
    event: EventRecord
    origin: Origin
    attempts: int  # attempts made so far
    # Of those, the ones that made a request (an open circuit counts attempts without one);
    # None in records written before this was kept, taken to be all of them.
    sent: int | None = None
    first_attempt_at: float | None = None  # unix seconds; None before the first attempt
    due_at: float = 0.0  # unix seconds
    last_error: LastError | None = None
    # Dead letters only: why, when, and (for a replayed one) which dead letter it came from.
    reason: str | None = None
    dead_lettered_at: float | None = None
    replay_of: str | None = None
    # Ordered subscriptions only: the delivery's number in its key's sequence, once given
    # (docs/ordering.md); sent as the `webhook-sequence` header.
    sequence: int | None = None


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(DeliveryRecord)


def encode(record: DeliveryRecord) -> bytes:
    return _ENCODER.encode(record)


def decode(value: bytes | None) -> DeliveryRecord:
    """Raise msgspec.DecodeError (a ValueError) for anything that is not a delivery record."""
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


def subscription_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> str:
    """The subscription id from the record's headers; "" when missing or unreadable."""
    for key, value in headers:
        if key == SUBSCRIPTION_HEADER:
            return value.decode("utf-8", "replace")
    return ""


def retry_headers(record: DeliveryRecord) -> list[tuple[str, bytes]]:
    return [
        (DUE_HEADER, str(int(record.due_at * 1000)).encode()),
        (SUBSCRIPTION_HEADER, record.subscription_id.encode()),
        (HEADER_PREFIX + "event-id", record.event.id.encode()),
        (HEADER_PREFIX + "attempts", str(record.attempts).encode()),
    ]
