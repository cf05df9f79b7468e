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
from service.events.envelope import InvalidEvent, decode_event, rfc3339
from service.lookups.protocol import BadRequest, reply_headers
from service.observability import metrics
from service.routing.decision import (
    Filtered,
    Refused,
    RoutingDecision,
    RoutingSink,
    outcome_of,
    salvaged_ids,
)
from service.routing.filters import path_text
from service.routing.router import Router

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
    ) -> None:
        self._max_event_bytes = settings.max_event_bytes
        self._settings = settings
        self._router = router
        self._pool = pool
        self._followup = followup
        self._quarantine = quarantine
        self._lookups = lookups
        self._decisions = decisions

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
            self._refuse(record, token, exc.reason, exc.detail)
            return
        except BadRequest as exc:
            self._refuse(record, token, "bad_reply_headers", str(exc))
            return
        if request is not None:
            # Answered now, outside the per-endpoint queues: a caller is waiting on the line.
            self._lookups.take(event, request, record.timestamp, token)
            return
        subs, refused, filtered = self._router.route(event)
        if self._decisions is not None:
            self._decisions.add_routing(
                RoutingDecision(
                    event_id=event.id,
                    tenant_id=event.tenant_id,
                    event_type=event.type,
                    at=time.time(),
                    outcome=outcome_of(len(subs), len(refused), len(filtered)),
                    matched=tuple(sub.id for sub in subs),
                    filtered=tuple(
                        Filtered(sub_id, index, path_text(cond.path), cond.op)
                        for sub_id, cond, index in filtered
                    ),
                    schema_refused=tuple(Refused(sub.id, error) for sub, error in refused),
                )
            )
        if not subs and not refused:
            metrics.EVENTS_UNROUTED.inc()
            token.done()
            return
        countdown = _Countdown(len(subs) + len(refused), token.done)
        origin = Origin(record.topic, record.partition, record.offset)
        for sub in subs:
            job = DeliveryJob(event, sub.id, sub, countdown.one_done, origin=origin)
            token.attach(job)
            self._pool.submit(job)
        for sub, error in refused:
            # A strict subscription refused the event: a dead letter, which an operator can
            # still replay (a replay is delivered without the schema check).
            mismatch = LastError(outcome="schema_mismatch", error=error, at=rfc3339(time.time()))
            job = DeliveryJob(
                event, sub.id, sub, countdown.one_done, origin=origin, last_error=mismatch
            )
            token.attach(job)
            self._followup.give_up(job, "schema_mismatch")

    def _refuse(self, record: ConsumerRecord, token: Token, reason: str, detail: str) -> None:
        metrics.EVENTS_INVALID.labels(reason).inc()
        ids = salvaged_ids(record.value, record.headers) if self._decisions is not None else None
        if self._decisions is not None and ids is not None:
            event_id, tenant_id, event_type = ids
            self._decisions.add_routing(
                RoutingDecision(event_id=event_id, tenant_id=tenant_id, event_type=event_type,
                                at=time.time(), outcome="quarantined", reason=reason,
                                detail=detail[:500])
            )  # fmt: skip
        log.warning("event_invalid", topic=record.topic, partition=record.partition,
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
