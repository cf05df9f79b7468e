"""Which subscriptions an event goes to.

An index per tenant, rebuilt only for the tenant whose subscriptions changed: exact types in a
dict, `prefix.*` patterns in a dict keyed by prefix, `*` in a list. A lookup costs one dict
probe per dot in the event type, whatever the number of subscriptions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import structlog

from service.catalog.entries import schema_error
from service.events.envelope import Event
from service.observability import metrics
from service.routing.filters import Condition, InvalidFilter, compile_filters, failing
from service.subscriptions.model import Subscription

# What routing an event gives: the subscriptions it goes to; those whose strict schema refused
# it, each with why; and those whose filter dropped it, with the failing condition and index.
Routed = tuple[list[Subscription], list[tuple[Subscription, str]], list[tuple[str, Condition, int]]]

log = structlog.get_logger("switchboard.router")
_FILTERED = metrics.EVENTS_FILTERED.labels("filter")
_SCHEMA = metrics.EVENTS_FILTERED.labels("schema")


class _TenantIndex:
    __slots__ = ("any", "exact", "prefix")

    def __init__(self, subs: Iterable[Subscription]) -> None:
        exact: defaultdict[str, list[Subscription]] = defaultdict(list)
        prefix: defaultdict[str, list[Subscription]] = defaultdict(list)
        self.any: list[Subscription] = []
        for sub in subs:
            # Disabled by its customer: paused, no events. Disabled by the service (410, or
            # failing for days): still matched, so its events become dead letters that can
            # be recovered once it is enabled again.
            if not sub.enabled and sub.disabled_reason is None:
                continue
            for pattern in sub.event_types:
                if pattern == "*":
                    self.any.append(sub)
                elif pattern.endswith(".*"):
                    prefix[pattern[:-1]].append(sub)  # keep the dot: "call." matches "call.x"
                else:
                    exact[pattern].append(sub)
        self.exact = dict(exact)
        self.prefix = dict(prefix)

    def match(self, event_type: str) -> list[Subscription]:
        found: list[Subscription] = list(self.any)
        found.extend(self.exact.get(event_type, ()))
        dot = event_type.find(".")
        while dot != -1:
            found.extend(self.prefix.get(event_type[: dot + 1], ()))
            dot = event_type.find(".", dot + 1)
        if len(found) <= 1:
            return found
        # A subscription listing both `call.*` and `call.ended` gets the event once.
        return list({sub.id: sub for sub in found}.values())


class Router:
    def __init__(self) -> None:
        self._by_tenant: dict[str, dict[str, Subscription]] = {}
        self._tenant_of: dict[str, str] = {}
        self._index: dict[str, _TenantIndex] = {}
        # Compiled filters of the subscriptions that have any, by id.
        self._filters: dict[str, tuple[Condition, ...]] = {}
        # Tenants whose index is stale. Rebuilt at their next lookup, so loading 10,000
        # subscriptions of one tenant at start costs one rebuild, not 10,000.
        self._dirty: set[str] = set()

    def upsert(self, sub: Subscription) -> None:
        previous_tenant = self._tenant_of.get(sub.id)
        if previous_tenant is not None and previous_tenant != sub.tenant_id:
            self.remove(sub.id)
        self._tenant_of[sub.id] = sub.tenant_id
        self._by_tenant.setdefault(sub.tenant_id, {})[sub.id] = sub
        self._dirty.add(sub.tenant_id)
        self._filters.pop(sub.id, None)
        if sub.filters:
            try:
                self._filters[sub.id] = compile_filters(sub.filters)
            except InvalidFilter as exc:
                # Only a record written around the API can hold this; its events are
                # delivered unfiltered rather than silently dropped.
                log.warning("subscription_filters_unusable", subscription_id=sub.id,
                            error=str(exc))  # fmt: skip

    def remove(self, sub_id: str) -> None:
        tenant = self._tenant_of.pop(sub_id, None)
        self._filters.pop(sub_id, None)
        if tenant is not None:
            self._by_tenant[tenant].pop(sub_id, None)
            self._dirty.add(tenant)

    def match(self, tenant_id: str, event_type: str) -> list[Subscription]:
        if tenant_id in self._dirty:
            self._reindex(tenant_id)
        index = self._index.get(tenant_id)
        return index.match(event_type) if index is not None else []

    def route(self, event: Event) -> Routed:
        """The subscriptions the event goes to; those it would go to but for their strict
        schema validation, each with the reason (the caller dead-letters those); and those
        whose filter dropped it, each with the failing condition and its index."""
        subs = self.match(event.tenant_id, event.type)
        if not subs:
            return subs, [], []
        deliver: list[Subscription] = []
        refused: list[tuple[Subscription, str]] = []
        filtered: list[tuple[str, Condition, int]] = []
        for sub in subs:
            conditions = self._filters.get(sub.id)
            if conditions is not None and (index := failing(conditions, event)) is not None:
                _FILTERED.inc()
                filtered.append((sub.id, conditions[index], index))
                continue
            if sub.strict_schema and (error := schema_error(event.type, event.data)) is not None:
                _SCHEMA.inc()
                refused.append((sub, error))
                continue
            deliver.append(sub)
        return deliver, refused, filtered

    def _reindex(self, tenant_id: str) -> None:
        self._dirty.discard(tenant_id)
        subs = self._by_tenant.get(tenant_id)
        if subs:
            self._index[tenant_id] = _TenantIndex(subs.values())
        else:
            self._by_tenant.pop(tenant_id, None)
            self._index.pop(tenant_id, None)
