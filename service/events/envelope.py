"""The event envelope: CloudEvents 1.0 records (structured or binary mode) into `Event`.

Decoding never raises anything but `InvalidEvent`, whose `reason` is one of a closed set so it
can label a metric. The event's `data` is kept as the raw JSON bytes it arrived as: the default
webhook body splices them in unchanged, so the hot path never decodes and re-encodes a payload.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import orjson

from service.events.trace import TraceContext, trace_context

SPEC_VERSION: Final = "1.0"
# Ids and tenant ids end up in headers, log lines and Kafka keys: keep them bounded.
MAX_ID_LENGTH: Final = 256
MAX_TYPE_LENGTH: Final = 128
TYPE_PATTERN: Final = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")

# The closed set of reasons; each is a label value of switchboard_events_invalid.
REASONS: Final = (
    "oversized",
    "malformed_json",
    "missing_field",
    "wrong_type",
    "bad_specversion",
    "bad_id",
    "bad_type",
    "bad_tenant",
    "bad_time",
    "bad_data",
    "bad_reply_headers",  # a lookup request whose reply topic or correlation id cannot be used
    "not_a_lookup",  # a record on a lookup topic without reply headers
    "internal_error",  # valid, but handling it failed on our side; kept for a replay
)


class InvalidEvent(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Structured(msgspec.Struct):
    specversion: str
    id: str
    source: str
    type: str
    tenantid: str
    time: str | None = None
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    # The distributed-tracing extension (service/events/trace.py): any JSON is accepted here,
    # and kept only if it parses, so that a bad trace context never costs the event.
    traceparent: Any = None
    tracestate: Any = None


_STRUCTURED_DECODER: Final = msgspec.json.Decoder(_Structured)
_RAW_DECODER: Final = msgspec.json.Decoder(msgspec.Raw)
_EMPTY_OBJECT: Final = b"{}"


class Event:
    """One valid event. `data_raw` is the JSON object exactly as received."""

    __slots__ = (
        "_body",
        "_data",
        "data_raw",
        "id",
        "source",
        "tenant_id",
        "time",
        "time_unix",
        "trace",
        "type",
    )

    def __init__(
        self,
        *,
        id: str,
        source: str,
        type: str,
        tenant_id: str,
        time: str,
        time_unix: float,
        data_raw: bytes,
        trace: TraceContext | None = None,
    ) -> None:
        self.id = id
        self.source = source
        self.type = type
        self.tenant_id = tenant_id
        self.time = time
        self.time_unix = time_unix
        self.data_raw = data_raw
        self.trace = trace
        self._body: bytes | None = None
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The decoded payload, decoded once and only when something needs its fields."""
        if self._data is None:
            self._data = orjson.loads(self.data_raw)
        return self._data

    def webhook_body(self) -> bytes:
        """The default webhook body, built once per event and shared by every subscription."""
        if self._body is None:
            self._body = b'{"id":%b,"type":%b,"timestamp":%b,"tenant_id":%b,"data":%b}' % (
                orjson.dumps(self.id),
                orjson.dumps(self.type),
                orjson.dumps(self.time),
                orjson.dumps(self.tenant_id),
                self.data_raw,
            )
        return self._body


def rfc3339(unix: float) -> str:
    """A unix time as RFC 3339 in UTC with milliseconds, the form every timestamp we write has."""
    when = datetime.fromtimestamp(unix, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decode_event(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    record_timestamp_ms: int,
    max_bytes: int,
) -> Event:
    """Decode a Kafka record into an Event or raise InvalidEvent with a reason."""
    size = len(value or b"")
    if headers:
        size += sum(len(k) + len(v or b"") for k, v in headers)
    if size > max_bytes:
        raise InvalidEvent("oversized", f"{size} bytes > limit {max_bytes}")
    ce = {k[3:]: v for k, v in headers if k.startswith("ce_")}
    if "specversion" in ce:
        return _binary(value, ce, record_timestamp_ms)
    return _structured(value, record_timestamp_ms)


def _structured(value: bytes | None, record_timestamp_ms: int) -> Event:
    if not value:
        raise InvalidEvent("malformed_json", "empty record value")
    try:
        ce = _STRUCTURED_DECODER.decode(value)
    except msgspec.ValidationError as exc:
        message = str(exc)
        reason = "missing_field" if message.startswith("Object missing required") else "wrong_type"
        raise InvalidEvent(reason, message) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)) from None
    data = bytes(ce.data)
    if not data or data == b"null":  # absent or null data: an event with an empty payload
        data = _EMPTY_OBJECT
    event = _build(
        specversion=ce.specversion,
        event_id=ce.id,
        source=ce.source,
        event_type=ce.type,
        tenant_id=ce.tenantid,
        time=ce.time,
        data=data,
        record_timestamp_ms=record_timestamp_ms,
    )
    if isinstance(ce.traceparent, str):
        state = ce.tracestate if isinstance(ce.tracestate, str) else None
        event.trace = trace_context(ce.traceparent, state)
    return event


def _binary(value: bytes | None, ce: dict[str, bytes], record_timestamp_ms: int) -> Event:
    attrs: dict[str, str | None] = {}
    for name in ("specversion", "id", "source", "type", "tenantid", "time"):
        raw = ce.get(name)
        if raw is None:
            attrs[name] = None
            continue
        try:
            attrs[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("wrong_type", f"header ce_{name} is not UTF-8") from None
    for name in ("id", "source", "type", "tenantid"):
        if attrs[name] is None:
            raise InvalidEvent("missing_field", f"header ce_{name} is missing")
    data = _EMPTY_OBJECT
    if value:
        try:
            data = bytes(_RAW_DECODER.decode(value))
        except msgspec.DecodeError as exc:
            raise InvalidEvent("malformed_json", str(exc)) from None
    event = _build(
        specversion=attrs["specversion"] or "",
        event_id=attrs["id"] or "",
        source=attrs["source"] or "",
        event_type=attrs["type"] or "",
        tenant_id=attrs["tenantid"] or "",
        time=attrs["time"],
        data=data,
        record_timestamp_ms=record_timestamp_ms,
    )
    if (parent := ce.get("traceparent")) is not None:
        state = ce.get("tracestate")
        event.trace = trace_context(
            parent.decode("utf-8", "replace"),
            state.decode("utf-8", "replace") if state is not None else None,
        )
    return event


def _build(
    *,
    specversion: str,
    event_id: str,
    source: str,
    event_type: str,
    tenant_id: str,
    time: str | None,
    data: bytes,
    record_timestamp_ms: int,
) -> Event:
    if specversion != SPEC_VERSION:
        raise InvalidEvent("bad_specversion", f"specversion must be {SPEC_VERSION!r}")
    if not event_id or len(event_id) > MAX_ID_LENGTH or _CONTROL_CHARS.search(event_id):
        raise InvalidEvent("bad_id", f"id must be 1..{MAX_ID_LENGTH} printable characters")
    if len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.fullmatch(event_type):
        raise InvalidEvent("bad_type", "type must be dotted lower-case, e.g. call.ended")
    if not tenant_id or len(tenant_id) > MAX_ID_LENGTH or _CONTROL_CHARS.search(tenant_id):
        raise InvalidEvent(
            "bad_tenant", f"tenantid must be 1..{MAX_ID_LENGTH} printable characters"
        )
    if not data.lstrip().startswith(b"{"):
        raise InvalidEvent("bad_data", "data must be a JSON object")
    if time is None:
        when = datetime.fromtimestamp(record_timestamp_ms / 1000, tz=UTC)
        time = when.isoformat().replace("+00:00", "Z")
    else:
        when = _parse_rfc3339(time)
    return Event(
        id=event_id,
        source=source,
        type=event_type,
        tenant_id=tenant_id,
        time=time,
        time_unix=when.timestamp(),
        data_raw=data,
    )


def _parse_rfc3339(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("bad_time", "time must be RFC 3339") from None
    if when.tzinfo is None or "T" not in value.upper():
        raise InvalidEvent("bad_time", "time must be RFC 3339 with a UTC offset")
    return when
