"""The events handler: decode → route → first attempt, for the records of the event topics.

A record is finished when each matching subscription's first attempt is done and what
follows it is durable (delivered, or handed to a retry tier or the dead letters), or when
the record itself is in the quarantine topic. Its deliveries are jobs in the delivery pool's
per-endpoint queues, not tasks of their own: a record costs a few small objects, not a
coroutine. A lookup request (a record with reply headers) goes to the lookup handler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Token
from consumers.engine.tasks import finish_when_done
from consumers.events.quarantine import Quarantine
from consumers.lookups.handler import LookupHandler
from service.config import Settings
from service.delivery.followup import Followup
from service.delivery.job import DeliveryJob, JobQueue
from service.delivery.record import LastError, Origin
from service.events.envelope import Event, InvalidEvent, decode_event, rfc3339
from service.lookups.protocol import BadRequest, reply_headers
from service.observability import metrics
from service.observability.tracing import Tracing
from service.routing.decision import RoutingSink, quarantined, routed
from service.routing.router import Routed, Router

if TYPE_CHECKING:
    from opentelemetry.context import Context

log = structlog.get_logger("switchboard.consumer")

ROLE = "events"


class _Countdown:
    """Calls `then` once `count` parts are done."""

    __slots__ = ("_left", "_then")

    def __init__(self, count: int, then: Callable[[], None]) -> None:
        self._left = count
        self._then = then

    def one_done(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._then()


class EventHandler:
    def __init__(
        self,
        settings: Settings,
        *,
        router: Router,
        pool: JobQueue,
        followup: Followup,
        quarantine: Quarantine,
        lookups: LookupHandler,
        decisions: RoutingSink | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._max_event_bytes = settings.max_event_bytes
        self._settings = settings
        self._router = router
        self._pool = pool
        self._followup = followup
        self._quarantine = quarantine
        self._lookups = lookups
        self._decisions = decisions
        self._tracing = tracing

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        try:
            event = decode_event(
                record.value,
                record.headers,
                record_timestamp_ms=record.timestamp,
                max_bytes=self._max_event_bytes,
            )
            request = reply_headers(record.headers, self._settings)
        except InvalidEvent as exc:
            self._refuse(record, token, exc.reason, exc.detail, "event_invalid")
            return
        except BadRequest as exc:
            self._refuse(record, token, "bad_reply_headers", str(exc), "lookup_request_invalid")
            return
        if self._tracing is None:
            self._take(record, token, event, request, None)
            return
        with self._tracing.consuming(record.topic, record.partition, record.offset,
                                     event) as parent:  # fmt: skip
            self._take(record, token, event, request, parent)

    def _take(
        self,
        record: ConsumerRecord,
        token: Token,
        event: Event,
        request: tuple[str, str] | None,
        parent: Context | None,
    ) -> None:
        """Route a decoded event and start its deliveries (or its lookup); `parent` is the
        consume span's context with tracing on."""
        if request is not None:
            # Answered now, outside the per-endpoint queues: a caller is waiting on the line.
            self._lookups.take(event, request, record.timestamp, token, parent)
            return
        try:
            subs, refused, filtered = self._route(event, parent)
        except Exception:  # a bug of ours: the record is kept, with why, not lost
            log.exception("routing_failed", topic=record.topic, partition=record.partition,
                          offset=record.offset)  # fmt: skip
            self._refuse(record, token, "internal_error", "routing failed", None)
            return
        if self._decisions is not None:
            self._decisions.add_routing(routed(event, time.time(), subs, refused, filtered))
        if not subs and not refused:
            metrics.EVENTS_UNROUTED.inc()
            token.done()
            return
        countdown = _Countdown(len(subs) + len(refused), token.done)
        origin = Origin(record.topic, record.partition, record.offset)
        for sub in subs:
            job = DeliveryJob(
                event, sub.id, sub, countdown.one_done, origin=origin, trace_parent=parent
            )
            token.attach(job)
            self._pool.submit(job)
        for sub, error in refused:
            # A strict subscription refused the event: a dead letter, which an operator can
            # still replay (a replay is delivered without the schema check).
            mismatch = LastError(outcome="schema_mismatch", error=error, at=rfc3339(time.time()))
            job = DeliveryJob(
                event, sub.id, sub, countdown.one_done,
                origin=origin, last_error=mismatch, trace_parent=parent,
            )  # fmt: skip
            token.attach(job)
            self._followup.give_up(job, "schema_mismatch")

    def _route(self, event: Event, parent: Context | None) -> Routed:
        if self._tracing is None or parent is None:
            return self._router.route(event)
        return self._tracing.route(parent, event, self._router)

    def _refuse(
        self, record: ConsumerRecord, token: Token, reason: str, detail: str, event: str | None
    ) -> None:
        """Quarantine the record; `event` names the log line (None: logged by the caller)."""
        metrics.EVENTS_INVALID.labels(reason).inc()
        if self._decisions is not None:
            decision = quarantined(record.value, record.headers, reason, detail, time.time())
            if decision is not None:
                self._decisions.add_routing(decision)
        if event is not None:
            log.warning(event, topic=record.topic, partition=record.partition,
                        offset=record.offset, reason=reason, detail=detail)  # fmt: skip
        finish_when_done(token, self._quarantine.put(record, reason, detail), ROLE)

    # Nothing is held or timed: every record is started as soon as it is read.

    def poll(self) -> None:
        return None

    def held(self, tp: TopicPartition) -> bool:
        return False

    def wake_at(self) -> float | None:
        return None

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        return None
