"""The hop to the delivery stage: one delivery record per matched subscription.

Keyed by the subscription's id, so that every delivery to a subscription, first attempts and
retries alike, lands in the partition of the deliveries topic (and of each retry tier) that
one replica owns (consumers/deliveries/handler.py). The event record is finished once all of
its delivery records are acknowledged: from then on they are the deliveries' durable copy.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.errors import MessageSizeTooLargeError

from consumers.engine.contract import Producer
from consumers.engine.produce import Write, produce, produce_many
from service.delivery.record import DeliveryRecord, EventRecord, Origin, encode, retry_headers
from service.events.envelope import Event
from service.observability.tracing import Tracing, carrying

ROLE = "handoff"


class Handoff:
    def __init__(self, producer: Producer, topic: str, tracing: Tracing | None = None) -> None:
        self._producer = producer
        self.topic = topic
        self._tracing = tracing

    async def hand_off(self, event: Event, sub_ids: Sequence[str], origin: Origin) -> list[str]:
        """Produce the event's delivery records until acknowledged; the ids of the
        subscriptions whose record is too large for the broker (the caller's to settle)."""
        copy = EventRecord.of(event)
        if self._tracing is not None:
            copy = carrying(copy)  # the delivery stage's spans hang under the handoff span
        records = [
            DeliveryRecord(subscription_id=s, event=copy, origin=origin, attempts=0)
            for s in sub_ids
        ]
        if len(records) == 1:
            # One subscription matched: the common case, without the lists of produce_many.
            try:
                await self._send(records[0])
            except MessageSizeTooLargeError:
                return list(sub_ids)
            return []
        # In this task, enqueued together and acknowledged together: they share the
        # producer's batches, and no task is started per record.
        results = await produce_many(self._producer, self.topic, ROLE, [
            Write(encode(r), r.subscription_id.encode(), retry_headers(r)) for r in records
        ])  # fmt: skip
        return [
            sub_id
            for sub_id, result in zip(sub_ids, results, strict=True)
            if isinstance(result, MessageSizeTooLargeError)
        ]

    async def _send(self, record: DeliveryRecord) -> None:
        await produce(
            self._producer, self.topic, ROLE,
            value=encode(record), key=record.subscription_id.encode(),
            headers=retry_headers(record),
        )  # fmt: skip
