"""The envelope decoder: structured and binary CloudEvents, and every way a record can be bad."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.events.envelope import REASONS, InvalidEvent, decode_event

LIMIT = 64 * 1024


def structured(**overrides: Any) -> bytes:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt_1",
        "source": "/voice/call",
        "type": "call.ended",
        "time": "2025-06-12T10:30:00Z",
        "tenantid": "acme",
        "data": {"call": {"duration": 125}},
    }
    event.update(overrides)
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def decode(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return decode_event(
        value, headers or [], record_timestamp_ms=1_700_000_000_000, max_bytes=LIMIT
    )


def test_structured_event_and_webhook_body() -> None:
    event = decode(structured())
    assert (event.id, event.type, event.tenant_id) == ("evt_1", "call.ended", "acme")
    assert orjson.loads(event.webhook_body()) == {
        "id": "evt_1",
        "type": "call.ended",
        "timestamp": "2025-06-12T10:30:00Z",
        "tenant_id": "acme",
        "data": {"call": {"duration": 125}},
    }
    assert event.data == {"call": {"duration": 125}}


def test_binary_mode() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"evt_2"),
        ("ce_source", b"/voice/call"),
        ("ce_type", b"call.started"),
        ("ce_time", b"2025-06-12T10:30:00+02:00"),
        ("ce_tenantid", b"acme"),
        ("content-type", b"application/json"),
    ]
    event = decode(b'{"agent": {"id": "agent_1"}}', headers)
    assert (event.id, event.type, event.tenant_id) == ("evt_2", "call.started", "acme")
    assert event.data == {"agent": {"id": "agent_1"}}
    assert event.time_unix == 1749717000.0


def test_missing_time_uses_record_timestamp_and_missing_data_is_empty() -> None:
    event = decode(structured(time=..., data=...))
    assert event.time == "2023-11-14T22:13:20Z"
    assert event.data == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "malformed_json"),
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "wrong_type"),
        (structured(id=...), "missing_field"),
        (structured(tenantid=...), "missing_field"),
        (structured(type=...), "missing_field"),
        (structured(id=12), "wrong_type"),
        (structured(tenantid=None), "wrong_type"),
        (structured(specversion="0.3"), "bad_specversion"),
        (structured(id=""), "bad_id"),
        (structured(id="x" * 300), "bad_id"),
        (structured(id="a\nb"), "bad_id"),
        (structured(type="Call.Ended"), "bad_type"),
        (structured(type="call..ended"), "bad_type"),
        (structured(tenantid=""), "bad_tenant"),
        (structured(time="yesterday"), "bad_time"),
        (structured(time="2025-06-12T10:30:00"), "bad_time"),
        (structured(data=[1, 2]), "bad_data"),
        (structured(data="text"), "bad_data"),
        (structured(data={"blob": "x" * LIMIT}), "oversized"),
    ],
)
def test_invalid_records_have_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(value)
    assert info.value.reason == reason


def test_binary_mode_missing_and_non_utf8_headers() -> None:
    base = [("ce_specversion", b"1.0"), ("ce_id", b"e"), ("ce_source", b"s"), ("ce_type", b"a.b")]
    with pytest.raises(InvalidEvent, match="missing_field"):
        decode(b"{}", base)
    with pytest.raises(InvalidEvent, match="wrong_type"):
        decode(b"{}", [*base, ("ce_tenantid", b"\xff\xfe")])
    with pytest.raises(InvalidEvent, match="malformed_json"):
        decode(b"{", [*base, ("ce_tenantid", b"t")])


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "time", "tenantid", "data", "x"]),
        _json | st.sampled_from(["1.0", "call.ended", "2025-06-12T10:30:00Z"]),
    )
)
def test_decoder_only_ever_raises_invalid_event(fields: dict[str, Any]) -> None:
    value = orjson.dumps(fields)
    try:
        event = decode(value)
    except InvalidEvent as exc:
        reason = exc.reason
        assert reason in REASONS
        return
    # Whatever it accepts, it can deliver: the body is valid JSON with the same data.
    body = orjson.loads(event.webhook_body())
    assert body["data"] == (fields.get("data") or {})
    assert body["tenant_id"] == fields["tenantid"]


@given(
    st.binary(max_size=300),
    st.lists(st.tuples(st.text(max_size=15), st.binary(max_size=20)), max_size=6),
)
def test_decoder_survives_arbitrary_bytes(value: bytes, headers: list[tuple[str, bytes]]) -> None:
    try:
        decode(value, headers)
    except InvalidEvent as exc:
        reason = exc.reason
        assert reason in REASONS
