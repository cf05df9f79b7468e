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

from service.events.envelope import rfc3339

TRIGGERS: Final = ("delivery", "test", "lookup")
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

    def view(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        out["at"] = rfc3339(self.at)
        out.setdefault("status", None)
        out.setdefault("error", None)
        return out


ENCODER: Final = msgspec.json.Encoder()
# A record of the attempts topic holds a batch of attempts (consumers/attempt_history.py).
DECODER: Final = msgspec.json.Decoder(list[AttemptRecord])


class AttemptSink(Protocol):
    def add(self, record: AttemptRecord) -> None: ...
