"""The delivery log: one record per attempt, published to `switchboard.attempts`.

Every replica reads the topic back into a bounded history (`consumers/attempt_history.py`),
so the log answers the same on every replica. A record says what was tried and what came of
it, never a secret: the request's method and URL, the outcome, the status, the latency, a
short excerpt of the response, and what triggered the attempt (a delivery, a test send, a
pre-call lookup).
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

    def view(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        out["at"] = rfc3339(self.at)
        out.setdefault("status", None)
        out.setdefault("error", None)
        out.setdefault("replay_of", None)
        return out


ENCODER: Final = msgspec.json.Encoder()
# A record of the attempts topic holds a batch of attempts (consumers/attempt_history.py).
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
    )
