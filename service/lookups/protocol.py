"""Pre-call lookups: a request event answered synchronously, the answer produced to a topic.

When a call comes in, the platform asks the customer's system who is calling before the
agent speaks. Upstream produces the request as an ordinary event (usually `call.inbound`)
with two record headers:

    switchboard.reply-topic      where the answer goes
    switchboard.correlation-id   copied to the answer, so the caller can match it

The event is routed like any other (tenant, types, filters); the oldest matching
subscription answers. It is called once, now, under the lookup deadline (default 2 s,
counted from when the request was produced), with no retry: a late answer is no answer.
The reply (`LookupReply`) always comes, with a status: `answered` (the endpoint's JSON is in
`answer`), `timeout`, `error`, `no_subscription`, or `expired` (the request was already
older than the deadline when read, so the endpoint is not called). The request's offset is
committed once the reply is acknowledged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import msgspec

from service.config import Settings

REPLY_TOPIC_HEADER: Final = "switchboard.reply-topic"
CORRELATION_HEADER: Final = "switchboard.correlation-id"
# An answer is a caller's context for one call: names, account, appointments. Not a file.
MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_CORRELATION_ID: Final = 256
_TOPIC_NAME: Final = re.compile(r"[A-Za-z0-9._\-]{1,249}")
ENCODER: Final = msgspec.json.Encoder()
_REQUEST_HEADERS: Final = frozenset((REPLY_TOPIC_HEADER, CORRELATION_HEADER))


class LookupReply(msgspec.Struct, kw_only=True):
    correlation_id: str
    event_id: str
    status: str  # answered, timeout, error, no_subscription, expired
    subscription_id: str | None = None
    http_status: int | None = None
    latency_ms: float | None = None
    answer: msgspec.Raw | None = None
    error: str | None = None


class BadRequest(ValueError):
    """The reply headers cannot be used; the record is quarantined with this reason."""


def reply_headers(
    headers: Sequence[tuple[str, bytes]], settings: Settings
) -> tuple[str, str] | None:
    """(reply topic, correlation id) when the record is a lookup request, else None.
    Raises BadRequest for headers that cannot be honoured."""
    if not headers:
        return None  # most records: not a request, and this runs for every one of them
    found = {k: v for k, v in headers if k in _REQUEST_HEADERS}
    if not found:
        return None
    try:
        topic = found[REPLY_TOPIC_HEADER].decode()
        correlation = found[CORRELATION_HEADER].decode()
    except KeyError as missing:
        raise BadRequest(f"header {missing.args[0]} is required with the other") from None
    except UnicodeDecodeError:
        raise BadRequest("reply headers must be UTF-8") from None
    if not _TOPIC_NAME.fullmatch(topic):
        raise BadRequest(f"{REPLY_TOPIC_HEADER} is not a topic name")
    # A request must never make the service write into its own state or event topics.
    own = settings.internal_topics()
    if (
        topic in own
        or topic in settings.event_topics
        or topic.startswith(settings.retry_topic_prefix + ".")
    ):
        raise BadRequest(f"{REPLY_TOPIC_HEADER} names one of the service's own topics")
    if not correlation or len(correlation) > MAX_CORRELATION_ID or not correlation.isprintable():
        raise BadRequest(f"{CORRELATION_HEADER}: 1..{MAX_CORRELATION_ID} printable characters")
    return topic, correlation
