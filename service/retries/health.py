"""Endpoint health: failing since when, recovered, disabled; and the ops events that say so.

When an endpoint's circuit opens, a health record `health_<subscription id>` with
`failing_since` goes to the subscriptions topic (its own key, so the service never
overwrites a customer's edit of the subscription). A success deletes it. The subscription
itself is disabled (410 Gone, or failing for too long) by writing it with `enabled: false`
and the reason; that write is durable before the delivery that caused it is finished.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from service.delivery.outcomes import AttemptResult
from service.events.envelope import rfc3339
from service.retries.ops import OpsEvents, transition_id
from service.subscriptions.model import Health, Subscription, disabled

log = structlog.get_logger("switchboard.health")


class HealthTable(Protocol):
    """The subscriptions table; its writes return once acknowledged and read back."""

    def get(self, sub_id: str) -> Subscription | None: ...
    def health(self, sub_id: str) -> Health | None: ...
    async def put(self, record: Subscription) -> None: ...
    async def put_health(self, sub_id: str, health: Health | None) -> None: ...


class EndpointHealth:
    def __init__(self, table: HealthTable, ops: OpsEvents) -> None:
        self._table = table
        self._ops = ops
        # Subscriptions with a health write under way: one write per change, not per attempt.
        self._writing: set[str] = set()
        # Disables under way: deliveries that fail together (two 410s in flight) share one.
        self._disabling: dict[str, asyncio.Future[None]] = {}

    def failing_since(self, sub_id: str) -> float | None:
        health = self._table.health(sub_id)
        return health.failing_since if health is not None else None

    def note_success(self, sub: Subscription) -> None:
        if self._table.health(sub.id) is not None and sub.id not in self._writing:
            self._ops.in_background(self._recovered(sub))

    def note_opened(self, sub: Subscription, now: float, result: AttemptResult) -> None:
        """The endpoint's circuit has just opened: record since when it is failing."""
        if self._table.health(sub.id) is None and sub.id not in self._writing:
            self._ops.in_background(self._failing(sub, now, result))

    async def disable(self, sub_id: str, why: str) -> None:
        """Disable the subscription; returns once that is acknowledged. Calls while a disable
        is under way wait for it, and calls for a subscription already disabled do nothing:
        one transition, one ops event."""
        running = self._disabling.get(sub_id)
        if running is None:
            current = self._table.get(sub_id)
            if current is None or not current.enabled:
                return
            # Tracked with the notifications, so that shutdown waits for it or ends it.
            running = self._ops.in_background(self._disable(current, why))
            self._disabling[sub_id] = running
            running.add_done_callback(lambda _: self._disabling.pop(sub_id, None))
        # Shielded: a job cancelled while waiting (its record abandoned) leaves the shared
        # write to finish for the others.
        await asyncio.shield(running)

    async def _disable(self, current: Subscription, why: str) -> None:
        sub_id = current.id
        await self._table.put(disabled(current, why))
        log.warning("subscription_disabled", subscription_id=sub_id, reason=why)
        # The version disabled names the transition: replicas disabling it at once agree.
        event_id = transition_id("endpoint.disabled", sub_id, current.updated_at)
        self._ops.notify("endpoint.disabled", sub_id, current.tenant_id, {"reason": why},
                         event_id=event_id)  # fmt: skip

    async def _failing(self, sub: Subscription, now: float, result: AttemptResult) -> None:
        self._writing.add(sub.id)
        error = result.error or f"HTTP {result.status}"
        try:
            await self._table.put_health(sub.id, Health(failing_since=now, last_error=error))
        finally:
            self._writing.discard(sub.id)
        await self._ops.publish(
            "endpoint.failing", sub.id, sub.tenant_id, {"since": rfc3339(now), "last_error": error}
        )

    async def _recovered(self, sub: Subscription) -> None:
        self._writing.add(sub.id)
        try:
            await self._table.put_health(sub.id, None)
        finally:
            self._writing.discard(sub.id)
        await self._ops.publish("endpoint.recovered", sub.id, sub.tenant_id, {})
