"""Routing decisions: what became of each event before any delivery, for "why didn't X arrive?".

One record per event read from the event topics: the subscriptions it went to; those it would
have gone to but for a filter, with the condition that failed (its index, path and operator);
those whose strict schema refused it; none at all; or, for a record that is not a valid
event, the quarantine with its reason. Pre-call lookups are answered on the line and have no
decision.

Decisions travel the delivery log's path: the attempts publisher writes them in batches to
the attempts topic (records with the header `switchboard.kind: routing`), and the history
indexer (`consumers/history/indexer.py`) stores them in PostgreSQL next to the attempts, with
their retention, so the hot path adds one small object per event and no encoding of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from service.events.envelope import Event, rfc3339
from service.routing.filters import Condition, path_text

if TYPE_CHECKING:
    from service.subscriptions.model import Subscription

# The Kafka header that tells a batch of decisions from a batch of attempts.
KIND_HEADER: Final = "switchboard.kind"
ROUTING_KIND: Final = b"routing"
# What happened to the event, in order of precedence: delivered to one subscription at least;
# else refused by a strict schema, else filtered out, else no subscription of its type.
OUTCOMES: Final = ("matched", "schema_refused", "filtered", "no_subscription", "quarantined")


class Filtered(msgspec.Struct, frozen=True, array_like=True):
    """A subscription of the event's type whose filter dropped it, and the failing condition."""

    subscription_id: str
    index: int
    path: str
    op: str


class Refused(msgspec.Struct, frozen=True, array_like=True):
    subscription_id: str
    error: str


class RoutingDecision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    event_id: str
    tenant_id: str  # "" for a quarantined record without one: the operator's only
    event_type: str = ""
    at: float  # unix seconds, when the event was routed
    outcome: str
    matched: tuple[str, ...] = ()
    filtered: tuple[Filtered, ...] = ()
    schema_refused: tuple[Refused, ...] = ()
    # Quarantined: why the record is not a valid event.
    reason: str | None = None
    detail: str | None = None

    def view(self) -> dict[str, object]:
        return {
            "at": rfc3339(self.at),
            "event_type": self.event_type or None,
            "tenant_id": self.tenant_id or None,
            "outcome": self.outcome,
            "matched": list(self.matched),
            "filtered": [
                {
                    "subscription_id": f.subscription_id,
                    "condition": {"index": f.index, "path": f.path, "op": f.op},
                }
                for f in self.filtered
            ],
            "schema_refused": [
                {"subscription_id": r.subscription_id, "error": r.error}
                for r in self.schema_refused
            ],
            "quarantine": (
                {"reason": self.reason, "detail": self.detail} if self.outcome == "quarantined"
                else None
            ),
        }  # fmt: skip


def routed(
    event: Event,
    at: float,
    subs: Sequence[Subscription],
    refused: Sequence[tuple[Subscription, str]],
    filtered: Sequence[tuple[str, Condition, int]],
) -> RoutingDecision:
    """The decision for an event, from what Router.route() answered."""
    return RoutingDecision(
        event_id=event.id,
        tenant_id=event.tenant_id,
        event_type=event.type,
        at=at,
        outcome=outcome_of(len(subs), len(refused), len(filtered)),
        matched=tuple(sub.id for sub in subs),
        filtered=tuple(
            Filtered(sub_id, index, path_text(cond.path), cond.op)
            for sub_id, cond, index in filtered
        ),
        schema_refused=tuple(Refused(sub.id, error) for sub, error in refused),
    )


def quarantined(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    reason: str,
    detail: str,
    at: float,
) -> RoutingDecision | None:
    """The decision for a record that is not a valid event; None when it has no readable id."""
    ids = salvaged_ids(value, headers)
    if ids is None:
        return None
    event_id, tenant_id, event_type = ids
    return RoutingDecision(event_id=event_id, tenant_id=tenant_id, event_type=event_type, at=at,
                           outcome="quarantined", reason=reason, detail=detail[:500])  # fmt: skip


def outcome_of(matched: int, refused: int, filtered: int) -> str:
    if matched:
        return "matched"
    if refused:
        return "schema_refused"
    return "filtered" if filtered else "no_subscription"


ENCODER: Final = msgspec.json.Encoder()
DECODER: Final = msgspec.json.Decoder(list[RoutingDecision])


class RoutingSink(Protocol):
    def add_routing(self, decision: RoutingDecision) -> None: ...


class _Ids(msgspec.Struct):
    id: str | None = None
    tenantid: str | None = None
    type: str | None = None


_IDS: Final = msgspec.json.Decoder(_Ids)


def salvaged_ids(
    value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> tuple[str, str, str] | None:
    """The id, tenant and type of a record that is not a valid event, where they can be read
    at all: so that a quarantined event can be asked about by its id. None without an id."""
    ce = {k[3:]: (v or b"").decode("utf-8", "replace")[:256] for k, v in headers
          if k.startswith("ce_")}  # fmt: skip
    if ce.get("id"):
        return ce["id"], ce.get("tenantid", ""), ce.get("type", "")
    try:
        ids = _IDS.decode(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not ids.id:
        return None
    return ids.id[:256], (ids.tenantid or "")[:256], (ids.type or "")[:256]
