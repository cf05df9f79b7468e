"""The dead letters: the dead-letter topic materialized in each replica for the admin API.

Each dead letter is named by where it is stored (`dl_<partition>_<offset>`), which every
replica agrees on. Replaying one produces it to the first retry tier as a fresh delivery
(attempt count and window start over; the webhook-id stays the same, so a receiver that saw
it before can tell) and then a marker record (`replayed_<id>`) to the same topic. The marker
is what makes replay idempotent: a dead letter with a marker is not replayed again, on any
replica. The delivery is produced before the marker, so a crash between the two replays
once more rather than never.

Memory is bounded: the newest `dead_letters_retained` stay listed; older ones remain in the
topic (for its retention) for tools that read it directly.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Final

import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from consumers.engine.reader import TopicReader
from service.config import Settings
from service.dead_letters.model import DeadLetter
from service.delivery.record import DeliveryRecord, decode, encode, retry_headers
from service.observability import metrics

log = structlog.get_logger("switchboard.dead_letters")

MARKER_PREFIX: Final = "replayed_"


class _Marker(msgspec.Struct, frozen=True):
    replayed_at: float


_MARKER_ENCODER: Final = msgspec.json.Encoder()
_MARKER_DECODER: Final = msgspec.json.Decoder(_Marker)


class DeadLetters(TopicReader):
    def __init__(self, settings: Settings, producer: Producer, *, replay_topic: str) -> None:
        super().__init__(settings, settings.dead_letter_topic)
        self._producer = producer
        self._replay_topic = replay_topic
        self._retained = settings.dead_letters_retained
        self._letters: OrderedDict[str, DeadLetter] = OrderedDict()
        # Markers read before (or without) their dead letter, by dead letter id.
        self._markers: dict[str, float] = {}
        self._seq = 0

    # Reads

    def get(self, dl_id: str) -> DeadLetter | None:
        return self._letters.get(dl_id)

    def all(self) -> list[DeadLetter]:
        return list(self._letters.values())

    # Replay

    async def replay(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Re-enqueue those not replayed yet and return them; each is replayed at most once.

        Waits while the broker does not take them (the caller bounds the wait); calling again
        is safe, since only the dead letters whose deliveries were acknowledged got a marker.
        """
        fresh = [dl for dl in letters if dl.replayed_at is None]
        now = time.time()
        deliveries = [
            msgspec.structs.replace(
                dl.record,
                attempts=0,
                first_attempt_at=None,
                due_at=now,
                last_error=None,
                reason=None,
                dead_lettered_at=None,
                replay_of=dl.id,
            )
            for dl in fresh
        ]
        # Every delivery is acknowledged before any marker is written.
        await asyncio.gather(*(self._produce_replay(d) for d in deliveries))
        marker = _MARKER_ENCODER.encode(_Marker(now))
        marked = await asyncio.gather(
            *(
                produce(
                    self._producer,
                    self._topic,
                    "replay",
                    key=(MARKER_PREFIX + dl.id).encode(),
                    value=marker,
                )
                for dl in fresh
            )
        )
        last: dict[TopicPartition, int] = {}
        for md in marked:
            tp = TopicPartition(md.topic, md.partition)
            last[tp] = max(last.get(tp, -1), md.offset)
        # Read-your-writes: once this replica has read the markers, a second replay (here)
        # sees them.
        for tp, offset in last.items():
            await self.wait_for(tp, offset)
        metrics.REPLAYS.inc(len(fresh))
        return fresh

    async def _produce_replay(self, delivery: DeliveryRecord) -> None:
        await produce(
            self._producer, self._replay_topic, "replay",
            value=encode(delivery), key=delivery.subscription_id.encode(),
            headers=retry_headers(delivery), retry_fatal=False,
        )  # fmt: skip

    # The reader

    def _apply(self, record: ConsumerRecord) -> None:
        key = (record.key or b"").decode("utf-8", "replace")
        if key.startswith(MARKER_PREFIX):
            self._apply_marker(key.removeprefix(MARKER_PREFIX), record)
            return
        dl_id = f"dl_{record.partition}_{record.offset}"
        try:
            delivery = decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            metrics.INTERNAL_RECORDS_INVALID.labels("dead_letter").inc()
            log.warning("dead_letter_record_skipped", id=dl_id, reason=str(exc))
            return
        self._seq += 1
        self._letters[dl_id] = DeadLetter(
            dl_id, self._seq, delivery, replayed_at=self._markers.pop(dl_id, None)
        )
        while len(self._letters) > self._retained:
            self._letters.popitem(last=False)

    def _apply_marker(self, dl_id: str, record: ConsumerRecord) -> None:
        try:
            marker = _MARKER_DECODER.decode(record.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            metrics.INTERNAL_RECORDS_INVALID.labels("dead_letter").inc()
            return
        letter = self._letters.get(dl_id)
        if letter is not None:
            letter.replayed_at = marker.replayed_at
        elif len(self._markers) < max(self._retained, 1):
            self._markers[dl_id] = marker.replayed_at
