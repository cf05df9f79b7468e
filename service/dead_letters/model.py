"""Dead letters: deliveries that could not be made, why, and how an operator finds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from service.delivery.record import HEADER_PREFIX, DeliveryRecord

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


@dataclass(slots=True)
class DeadLetter:
    """A dead letter as the admin API shows it; `id` names where it is stored."""

    id: str
    record: DeliveryRecord
    dead_lettered_at: float
    cursor: str  # the listing's keyset position (service/history/queries.py)
    replayed_at: float | None = None


def dead_letter_headers(record: DeliveryRecord, group_id: str) -> list[tuple[str, bytes]]:
    """What an operator filters dead letters by, readable without decoding the value."""
    error = record.last_error
    return [
        (HEADER_PREFIX + "reason", (record.reason or "").encode()),
        (HEADER_PREFIX + "subscription-id", record.subscription_id.encode()),
        (HEADER_PREFIX + "tenant-id", record.event.tenant_id.encode()),
        (HEADER_PREFIX + "event-id", record.event.id.encode()),
        (HEADER_PREFIX + "event-type", record.event.type.encode()),
        (HEADER_PREFIX + "origin.topic", record.origin.topic.encode()),
        (HEADER_PREFIX + "origin.partition", str(record.origin.partition).encode()),
        (HEADER_PREFIX + "origin.offset", str(record.origin.offset).encode()),
        (HEADER_PREFIX + "consumer-group", group_id.encode()),
        (HEADER_PREFIX + "attempts", str(record.attempts).encode()),
        (HEADER_PREFIX + "last-status", str(error.status or "" if error else "").encode()),
        (HEADER_PREFIX + "last-error-class", (error.outcome if error else "").encode()),
    ]
