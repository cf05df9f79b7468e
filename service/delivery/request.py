"""One request as it will be sent: shaped from the event and signed (Standard Webhooks)."""

from __future__ import annotations

from typing import Final

from yarl import URL

from service.delivery.endpoint import EndpointSettings
from service.delivery.signing import sign
from service.events.envelope import Event
from service.subscriptions.auth import MASK

# An ordered delivery's number in its key's sequence: 1, 2, 3... (docs/ordering.md).
SEQUENCE_HEADER: Final = "webhook-sequence"


class Prepared:
    """Method, URL, headers and body; what a test send echoes, with credentials masked."""

    __slots__ = ("body", "headers", "method", "secret_headers", "url")

    def __init__(
        self,
        method: str,
        url: str | URL,
        headers: dict[str, str],
        body: bytes | None,
        secret_headers: tuple[str, ...] = (),
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        # Header names whose values are credentials: masked wherever the request is shown.
        self.secret_headers = secret_headers

    def shown(self) -> dict[str, object]:
        masked = {n.lower() for n in self.secret_headers}
        return {
            "method": self.method,
            "url": str(self.url),
            "headers": {k: MASK if k.lower() in masked else v for k, v in self.headers.items()},
            "body": self.body.decode("utf-8", "replace") if self.body is not None else None,
        }


def prepare(
    settings: EndpointSettings,
    event: Event,
    msg_id: str,
    timestamp: int,
    sequence: int | None = None,
) -> Prepared:
    """The request for one attempt, signed at `timestamp` (unix seconds). For GET and DELETE
    the signed content is the query string as sent, since there is no body
    (docs/security.md). `sequence`: the delivery's number in its ordering key's sequence."""
    shape = settings.shape
    url: str | URL
    if shape.in_query:
        url = URL(settings.sub.url).extend_query(shape.query(event))
        body = None
        signed = url.raw_query_string.encode()
    else:
        url = settings.sub.url
        body = shape.body(event)
        signed = body
    signature = sign(settings.key, msg_id, timestamp, signed)
    if settings.previous_key and timestamp < settings.previous_until:
        # During a rotation's grace period both secrets sign, space-separated.
        signature += " " + sign(settings.previous_key, msg_id, timestamp, signed)
    headers = {
        **settings.headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    if not shape.is_default:
        headers.update(shape.headers(event))
    if sequence is not None:
        headers[SEQUENCE_HEADER] = str(sequence)
    if event.trace is not None:
        # Forwarded unchanged, as an intermediary that opens no span of its own: the
        # receiver's span joins the producer's trace.
        headers.update(event.trace.headers())
    return Prepared(settings.sub.method, url, headers, body, settings.secret_headers)
