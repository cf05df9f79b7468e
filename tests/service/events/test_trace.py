"""The trace context of the CloudEvents distributed-tracing extension: kept if valid, else
dropped without costing the event."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.events.envelope import decode_event
from service.events.trace import trace_context

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def structured(**extra: object) -> bytes:
    return orjson.dumps(
        {"specversion": "1.0", "id": "e1", "source": "/s", "type": "call.ended",
         "tenantid": "acme", "data": {}, **extra}
    )  # fmt: skip


def test_a_valid_context_is_kept_with_its_state() -> None:
    ctx = trace_context(PARENT, "vendor=opaque")
    assert ctx is not None
    assert ctx.headers() == {"traceparent": PARENT, "tracestate": "vendor=opaque"}
    assert ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "parent",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
    ],
)
def test_an_invalid_traceparent_is_dropped(parent: str) -> None:
    assert trace_context(parent, "vendor=x") is None


def test_a_bad_tracestate_is_dropped_alone() -> None:
    ctx = trace_context(PARENT, "x" * 600)
    assert ctx is not None
    assert ctx.headers() == {"traceparent": PARENT}


def test_structured_and_binary_events_carry_it_and_a_bad_one_costs_nothing() -> None:
    event = decode_event(structured(traceparent=PARENT, tracestate="a=b"), [],
                         record_timestamp_ms=0, max_bytes=10_000)  # fmt: skip
    assert event.trace is not None
    assert event.trace.traceparent == PARENT
    for bad in ("garbage", 42, {"x": 1}, None):
        kept = decode_event(structured(traceparent=bad), [], record_timestamp_ms=0,
                            max_bytes=10_000)  # fmt: skip
        assert kept.trace is None
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e2"), ("ce_source", b"/s"),
               ("ce_type", b"call.ended"), ("ce_tenantid", b"acme"),
               ("ce_traceparent", PARENT.encode())]  # fmt: skip
    binary = decode_event(b"{}", headers, record_timestamp_ms=0, max_bytes=10_000)
    assert binary.trace is not None
    assert binary.trace.traceparent == PARENT


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=80)))
def test_any_text_parses_or_is_dropped(parent: str, state: str | None) -> None:
    ctx = trace_context(parent, state)
    assert ctx is None or len(ctx.traceparent) == 55
