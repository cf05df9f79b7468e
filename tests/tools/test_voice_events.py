"""The event generator produces what the catalog documents, for every catalogued type."""

from __future__ import annotations

import random

import orjson
from hypothesis import given
from hypothesis import strategies as st

from service.catalog.entries import BY_TYPE, catalog, schema_error
from service.delivery.templates import RequestShape
from service.events.envelope import decode_event
from tools.voice_events import EVENT_TYPES, cloud_event


def test_the_demo_types_are_catalogued() -> None:
    assert set(EVENT_TYPES) <= set(BY_TYPE)


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_every_generated_event_validates_against_the_catalog(seed: int) -> None:
    rng = random.Random(seed)
    for entry in catalog():
        value = cloud_event(entry.type, "acme", rng)
        data = orjson.loads(value)["data"]
        assert schema_error(entry.type, data) is None, (entry.type, data)
        # And the service reads it as a valid event of that type.
        event = decode_event(value, [], record_timestamp_ms=0, max_bytes=1 << 20)
        assert event.type == entry.type


def test_the_documented_summary_template_renders_the_summary() -> None:
    """docs/events.md's `"summary": "{{data.summary}}"` on a generated call.summary_ready."""
    value = cloud_event("call.summary_ready", "acme", random.Random(1))
    event = decode_event(value, [], record_timestamp_ms=0, max_bytes=1 << 20)
    shape = RequestShape(method="POST", body_template={"summary": "{{data.summary}}"})
    body = orjson.loads(shape.body(event))
    assert isinstance(body["summary"], str)
    assert body["summary"]
