"""The events handler: decode → route → hand off, for the records of the event topics.

A record is finished when each matching subscription's delivery record is acknowledged by the
deliveries topic (consumers/events/handoff.py), whose partition's owner makes the attempts, or
its dead letter is (a strict subscription that refuses the event), or when the record itself
is in the quarantine topic. Nothing here waits on a receiver: a slow endpoint holds back its
own partition of the deliveries topic, never the event topics. A lookup request (a record with
reply headers) goes to the lookup handler, which asks the endpoint at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Token
from consumers.engine.tasks import finish_when_done
from consumers.events.handoff import Handoff
from consumers.events.quarantine import Quarantine
from consumers.lookups.handler import LookupHandler
from service.config import Settings
from service.delivery.followup import Followup
from service.delivery.job import DeliveryJob
from service.delivery.record import LastError, Origin
from service.events.envelope import Event, InvalidEvent, decode_event, rfc3339
from service.lookups.protocol import BadRequest, reply_headers
from service.observability import metrics
from service.observability.tracing import Attributes, Tracing
from service.routing.decision import RoutingSink, quarantined, routed
from service.routing.router import Routed, Router
from service.subscriptions.model import Subscription

if TYPE_CHECKING:
    from opentelemetry.context import Context

log = structlog.get_logger("switchboard.consumer")

ROLE = "events"


class EventHandler:
    def __init__(
        self,
        settings: Settings,
        *,
        router: Router,
        handoff: Handoff,
        followup: Followup,
        quarantine: Quarantine,
        lookups: LookupHandler,
        decisions: RoutingSink | None = None,
        tracing: Tracing | None = None,
        lookups_only: bool = False,
    ) -> None:
        self._max_event_bytes = settings.max_event_bytes
        self._settings = settings
        self._router = router
        self._handoff = handoff
        self._followup = followup
        self._quarantine = quarantine
        self._lookups = lookups
        self._decisions = decisions
        self._tracing = tracing
        # The lookup topics' handler (SWITCHBOARD_LOOKUP_TOPICS): every record must be a
        # lookup request; anything else is quarantined, never delivered as an event.
        self._lookups_only = lookups_only

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
        if request is None and self._lookups_only:
            self._refuse(record, token, "not_a_lookup", "no reply headers on a lookup topic",
                         "lookup_request_invalid")  # fmt: skip
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
        """Route a decoded event and hand it off (or answer its lookup); `parent` is the
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
        origin = Origin(record.topic, record.partition, record.offset)
        if refused or self._tracing is not None:
            finish_when_done(
                token, self._deliver(event, subs, refused, origin, token, parent=parent), ROLE
            )
            return
        by_id = {sub.id: sub for sub in subs}

        def settle(too_large: list[str]) -> None:
            if not too_large:
                token.done()
                return
            dead_letters = self._too_large(event, [by_id[s] for s in too_large], origin, token,
                                           parent)  # fmt: skip
            finish_when_done(token, dead_letters, ROLE)

        self._handoff.enqueue(event, list(by_id), origin, token, settle)

    def _route(self, event: Event, parent: Context | None) -> Routed:
        if self._tracing is None or parent is None:
            return self._router.route(event)
        return self._tracing.route(parent, event, self._router)

    async def _deliver(
        self,
        event: Event,
        subs: Sequence[Subscription],
        refused: Sequence[tuple[Subscription, str]],
        origin: Origin,
        token: Token,
        *,
        parent: Context | None,
    ) -> None:
        if not refused:
            # Awaited in this task: a gather of one would start a task more per event.
            await self._hand_off(event, subs, origin, token, parent=parent)
            return
        # A strict subscription refused the event: a dead letter, which an operator can still
        # replay (a replay is delivered without the schema check).
        await asyncio.gather(
            *(self._dead_letter(event, sub, origin, token, parent, reason="schema_mismatch",
                                error=error)
              for sub, error in refused),
            self._hand_off(event, subs, origin, token, parent=parent),
        )  # fmt: skip

    async def _hand_off(
        self,
        event: Event,
        subs: Sequence[Subscription],
        origin: Origin,
        token: Token,
        *,
        parent: Context | None,
    ) -> None:
        if not subs:
            return
        by_id = {sub.id: sub for sub in subs}
        handing_off = self._handoff.hand_off(event, list(by_id), origin)
        if self._tracing is not None:
            attributes: Attributes = {
                "switchboard.handoff": "delivery",
                "switchboard.deliveries": len(by_id),
            }
            handing_off = self._tracing.handoff(
                parent, self._handoff.topic, attributes, handing_off
            )
        too_large = await handing_off
        if too_large:
            await self._too_large(event, [by_id[s] for s in too_large], origin, token, parent)

    async def _too_large(
        self, event: Event, subs: list[Subscription], origin: Origin, token: Token,
        parent: Context | None,
    ) -> None:  # fmt: skip
        """Dead letters for the subscriptions whose delivery record the broker refused."""
        await asyncio.gather(
            *(self._dead_letter(event, sub, origin, token, parent, reason="too_large",
                                error="the delivery record is larger than the broker accepts")
              for sub in subs)
        )  # fmt: skip

    async def _dead_letter(
        self,
        event: Event,
        sub: Subscription,
        origin: Origin,
        token: Token,
        parent: Context | None,
        *,
        reason: str,
        error: str,
    ) -> None:
        settled = asyncio.get_running_loop().create_future()
        last = LastError(outcome=reason, error=error, at=rfc3339(time.time()))
        job = DeliveryJob(event, sub.id, sub, lambda: settled.set_result(None), origin=origin,
                          last_error=last, trace_parent=parent)  # fmt: skip
        token.attach(job)
        self._followup.give_up(job, reason)
        await settled

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

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        return None

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        return None
