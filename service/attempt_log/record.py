"""The delivery log: one record per attempt, published to `switchboard.attempts`.

The history indexer (`consumers/history/indexer.py`) writes the topic into PostgreSQL once
per fleet. A record says what was tried and what came of it, never a secret: the request's
method and URL, the outcome, the status, the latency, a short excerpt of the response, what
triggered the attempt (a delivery, a test send, a pre-call lookup), and the event's
correlation keys (`service/catalog/correlation.py`), so a call's attempts can be found.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from service.delivery.outcomes import AttemptResult
from service.delivery.request import Prepared
from service.events.envelope import Event, rfc3339
from service.subscriptions.model import Subscription

# "replay": an attempt of a dead letter sent again (and of its retries); `replay_of` names it.
TRIGGERS: Final = ("delivery", "replay", "test", "lookup")
# The ids an attempt can be searched by (`GET /v1/attempts?call_id=...`).
CORRELATION_KEYS: Final = ("call_id", "conversation_id", "contact_id", "campaign_id", "agent_id")
EXCERPT_CHARS: Final = 512


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    at: float  # unix seconds, when the response (or failure) came
    subscription_id: str
    tenant_id: str
    event_id: str
    event_type: str
    webhook_id: str
    attempt: int
    trigger: str
    method: str
    url: str
    outcome: str
    status: int | None = None
    latency_ms: float
    error: str | None = None
    response_excerpt: str = ""
    # The dead letter this delivery replays (trigger "replay").
    replay_of: str | None = None
    # Correlation keys, absent (and not encoded) when the event has none.
    call_id: str | None = None
    conversation_id: str | None = None
    contact_id: str | None = None
    campaign_id: str | None = None
    agent_id: str | None = None

    def view(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        out["at"] = rfc3339(self.at)
        out.setdefault("status", None)
        out.setdefault("error", None)
        out.setdefault("replay_of", None)
        for key in CORRELATION_KEYS:
            out.setdefault(key, None)
        return out


ENCODER: Final = msgspec.json.Encoder()
# A record of the attempts topic holds a batch of attempts (consumers/attempt_log/publisher.py).
DECODER: Final = msgspec.json.Decoder(list[AttemptRecord])


class AttemptSink(Protocol):
    def add(self, record: AttemptRecord) -> None: ...


def attempt_record(  # noqa: PLR0917 - one record's fields, always given all of them
    event: Event,
    sub: Subscription,
    msg_id: str,
    attempt: int,
    trigger: str,
    prepared: Prepared,
    result: AttemptResult,
    at: float,
    replay_of: str | None = None,
    keys: dict[str, str] | None = None,
) -> AttemptRecord:
    """What the log keeps of one attempt: never a header, a body or a secret."""
    url = prepared.url if isinstance(prepared.url, str) else str(prepared.url)
    excerpt = result.body_excerpt
    return AttemptRecord(
        id=f"{msg_id}.{attempt}.{int(at * 1000)}",
        at=at,
        subscription_id=sub.id,
        tenant_id=sub.tenant_id,
        event_id=event.id,
        event_type=event.type,
        webhook_id=msg_id,
        attempt=attempt,
        trigger=trigger,
        method=prepared.method,
        url=url[:2048],
        outcome=result.outcome.value,
        status=result.status,
        latency_ms=round(result.duration * 1000, 3),
        error=result.error,
        response_excerpt=excerpt[:EXCERPT_CHARS].decode("utf-8", "replace") if excerpt else "",
        replay_of=replay_of,
        **(keys or {}),
    )
