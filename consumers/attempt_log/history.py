"""The delivery log read back: every replica's bounded history of recent attempts.

`AttemptHistory` reads the last `attempts_retained` records of each partition at start and
follows the topic, keeping at most `attempts_retained` in memory with an index per
subscription and per event. Every replica reads the same topic, so the log answers the same
on any of them, a moment after the attempt. The routing decision of each event travels the
same topic (service/routing/decision.py) and is kept here too, by event id, with the same
bound: the newest `attempts_retained` decisions.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TypeVar

import msgspec
import structlog
from aiokafka import ConsumerRecord

from consumers.engine.reader import TopicReader
from service.attempt_log.record import DECODER, AttemptRecord
from service.config import Settings
from service.observability import metrics
from service.routing.decision import DECODER as ROUTING_DECODER
from service.routing.decision import KIND_HEADER, ROUTING_KIND, RoutingDecision

log = structlog.get_logger("switchboard.attempts")

T = TypeVar("T")


class AttemptHistory(TopicReader):
    def __init__(self, settings: Settings) -> None:
        retained = settings.attempts_retained
        # A restart reads back this many records per partition: at 1..MAX_PER_RECORD attempts
        # each, a tenth of the retained count refills the history at high rates without
        # decoding millions of attempts at start, and still holds thousands at low rates.
        super().__init__(settings, settings.attempts_topic, tail=max(1000, retained // 10))
        self._retained = retained
        self._all: deque[AttemptRecord] = deque()
        self._by_sub: dict[str, deque[AttemptRecord]] = {}
        # Lists, not deques: one per event, mostly of one or two attempts, and a deque costs
        # over 600 bytes empty.
        self._by_event: dict[str, list[AttemptRecord]] = {}
        # By event id, oldest first; a redelivered event's later decision replaces it.
        self._routing: OrderedDict[str, RoutingDecision] = OrderedDict()

    def for_subscription(self, sub_id: str) -> Iterable[AttemptRecord]:
        return self._by_sub.get(sub_id, ())

    def for_event(self, event_id: str) -> Iterable[AttemptRecord]:
        return self._by_event.get(event_id, ())

    def routing_for(self, event_id: str) -> RoutingDecision | None:
        return self._routing.get(event_id)

    @property
    def oldest(self) -> float | None:
        """When the oldest attempt held was made: how far back the history reaches."""
        return self._all[0].at if self._all else None

    def _apply(self, record: ConsumerRecord) -> None:
        if record.headers and (KIND_HEADER, ROUTING_KIND) in record.headers:
            self._apply_routing(record)
            return
        attempts = _decoded(DECODER, record, "attempt_record_skipped")
        if attempts is None or self._retained == 0:
            return
        for attempt in attempts:
            self._all.append(attempt)
            self._by_sub.setdefault(attempt.subscription_id, deque()).append(attempt)
            self._by_event.setdefault(attempt.event_id, []).append(attempt)
            if len(self._all) > self._retained:
                self._evict(self._all.popleft())

    def _evict(self, old: AttemptRecord) -> None:
        # Records enter every index in the same order, so the oldest overall is the oldest
        # of its subscription and of its event.
        by_sub = self._by_sub[old.subscription_id]
        by_sub.popleft()
        if not by_sub:
            del self._by_sub[old.subscription_id]
        by_event = self._by_event[old.event_id]
        del by_event[0]
        if not by_event:
            del self._by_event[old.event_id]

    def _apply_routing(self, record: ConsumerRecord) -> None:
        decisions = _decoded(ROUTING_DECODER, record, "routing_record_skipped")
        if decisions is None or self._retained == 0:
            return
        routing = self._routing
        for decision in decisions:
            routing.pop(decision.event_id, None)
            routing[decision.event_id] = decision
        while len(routing) > self._retained:
            routing.popitem(last=False)


def _decoded(
    decoder: msgspec.json.Decoder[list[T]], record: ConsumerRecord, skipped: str
) -> list[T] | None:
    """A batch of the attempts topic, or None (skipped and counted) if it cannot be read."""
    try:
        return decoder.decode(record.value or b"")
    except msgspec.DecodeError as exc:
        metrics.INTERNAL_RECORDS_INVALID.labels("attempts").inc()
        log.warning(skipped, offset=record.offset, reason=str(exc))
        return None
