"""Pure logic of filters, templates, success conditions and the catalog: fast, with properties."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.catalog.entries import BY_TYPE, catalog, schema_error
from service.delivery.success import CompiledCondition, SuccessCondition
from service.delivery.templates import InvalidTemplate, RequestShape
from service.events.envelope import Event
from service.routing.filters import Filter, InvalidFilter, compile_filters, json_equal, matches
from tools import events_doc

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)  # fmt: skip
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


def event(data: dict[str, Any], event_type: str = "call.ended") -> Event:
    return Event(
        id="evt_1",
        source="/voice",
        type=event_type,
        tenant_id="acme",
        time="2026-11-22T10:30:00Z",
        time_unix=time.time(),
        data_raw=orjson.dumps(data),
    )


def holds(data: dict[str, Any], *conditions: tuple[str, str, Any]) -> bool:
    compiled = compile_filters(tuple(Filter(p, op, v) for p, op, v in conditions))
    return matches(compiled, event(data))


def test_operators() -> None:
    data = {"agent": {"id": "a1"}, "call": {"duration": 90, "tags": ["vip"]}, "n": None}
    assert holds(data, ("data.agent.id", "eq", "a1"))
    assert not holds(data, ("data.agent.id", "eq", "a2"))
    assert holds(data, ("data.call.duration", "gt", 60), ("data.call.duration", "lte", 90))
    assert not holds(data, ("data.call.duration", "gt", "60"))  # no number/string ordering
    assert holds(data, ("data.agent.id", "in", ["a0", "a1"]))
    assert holds(data, ("data.agent.id", "not_in", ["a0"]))
    assert holds(data, ("data.call.tags", "contains", "vip"))
    assert holds(data, ("data.agent.id", "contains", "1"))
    assert holds(data, ("data.missing", "exists", False), ("data.n", "exists", True))
    assert holds(data, ("data.missing", "ne", 1), ("data.missing", "not_in", [1]))
    assert not holds(data, ("data.missing", "eq", None))
    assert holds(data, ("data.call.tags.0", "eq", "vip"))
    assert holds(data, ("type", "eq", "call.ended"), ("tenant_id", "eq", "acme"))
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal([1], [True])


@pytest.mark.parametrize(
    "bad",
    [
        Filter("data.a", "regex", "x"),
        Filter("", "eq", 1),
        Filter("data..a", "eq", 1),
        Filter("payload.a", "eq", 1),
        Filter("type.x", "eq", 1),
        Filter("data.a", "in", []),
        Filter("data.a", "exists", "yes"),
        Filter("data.a", "gt", [1]),
    ],
)
def test_bad_filters_are_refused(bad: Filter) -> None:
    with pytest.raises(InvalidFilter):
        compile_filters((bad,))


@given(data=json_objects, value=json_values)
def test_filters_never_raise_and_in_of_one_is_eq(data: dict[str, Any], value: Any) -> None:
    for path in ("data.a", "data.a.b", "data.0", "id"):
        eq = holds(data, (path, "eq", value))
        assert eq == holds(data, (path, "in", [value]))
        present = holds(data, (path, "exists", True))
        assert holds(data, (path, "ne", value)) == (not eq)
        assert not eq or present


def test_template_keeps_json_types_and_interpolates_text() -> None:
    shape = RequestShape(
        method="POST",
        body_template={"d": "{{data.call.duration}}", "o": "{{data.call}}", "m": "{{data.x}}",
                       "t": "{{ type }} for {{tenant_id}}: {{data.call.duration}}s {{data.x}}",
                       "lit": [1, {"k": False}]},
    )  # fmt: skip
    body = orjson.loads(shape.body(event({"call": {"duration": 5}})))
    assert body == {"d": 5, "o": {"duration": 5}, "m": None, "t": "call.ended for acme: 5s ",
                    "lit": [1, {"k": False}]}  # fmt: skip


def test_field_list_and_query_string() -> None:
    data = {"contact": {"phoneNumber": "+1555", "name": "J"}, "call": {"id": "c"}}
    fields = RequestShape(method="POST", body_fields=("data.contact.phoneNumber", "id", "data.z"))
    assert orjson.loads(fields.body(event(data))) == {
        "data": {"contact": {"phoneNumber": "+1555"}},
        "id": "evt_1",
    }
    get = RequestShape(method="GET", body_fields=("data.contact.phoneNumber", "data.z"))
    assert get.query(event(data)) == [("data.contact.phoneNumber", "+1555"), ("data.z", "")]
    default = RequestShape(method="DELETE")
    assert dict(default.query(event(data)))["data"] == orjson.dumps(data).decode()


def test_header_templates_cannot_inject_lines() -> None:
    shape = RequestShape(method="POST", headers={"X-Name": "{{data.name}}", "X-Fixed": "a"})
    assert shape.headers(event({"name": "a\r\nX-Evil: 1"})) == {"X-Name": "a  X-Evil: 1"}


@pytest.mark.parametrize(
    ("template", "fields"),
    [({"a": "{{data.a"}, None), ({"a": "{{}}"}, None), ({"a": "x}}"}, None),
     ({"a": "{{os.system}}"}, None), (None, ()), (None, ("data.a b",)), ({}, ("id",))],
)  # fmt: skip
def test_bad_templates_are_refused(template: Any, fields: tuple[str, ...] | None) -> None:
    with pytest.raises(InvalidTemplate):
        RequestShape(method="POST", body_template=template, body_fields=fields)


@given(data=json_objects)
def test_templates_always_render_json(data: dict[str, Any]) -> None:
    template = {"a": "{{data.a}}", "b": "x {{data.b}} y", "c": ["{{id}}"]}
    shape = RequestShape(method="POST", body_template=template)
    rendered = orjson.loads(shape.body(event(data)))
    assert rendered["c"] == ["evt_1"]
    assert rendered["a"] == data.get("a")


def test_success_conditions() -> None:
    default = CompiledCondition(SuccessCondition())
    assert default.failure(204, b"") is None
    assert default.failure(500, b"") is not None
    rule = CompiledCondition(
        SuccessCondition(status_codes=(200,), json_path="result.ok", json_value=True)
    )
    assert rule.failure(200, b'{"result": {"ok": true}}') is None
    assert rule.failure(200, b'{"result": {"ok": 1}}') == "response result.ok is 1, expected true"
    assert rule.failure(200, b"<html>") == "the response is not JSON (a JSON key must be checked)"
    assert rule.failure(200, b"{}") == "the response has no result.ok"
    assert rule.failure(201, b'{"result": {"ok": true}}') == "status 201 is not an accepted status"


def test_every_sample_fits_its_schema_and_bad_data_is_named() -> None:
    assert len(catalog()) == len(BY_TYPE) >= 34
    for entry in catalog():
        assert schema_error(entry.type, entry.sample) is None, entry.type
    error = schema_error("call.ended", {"call": {"id": "c", "duration": -1, "status": "x"}})
    assert error is not None
    assert error.startswith("data")
    assert schema_error("nope.nothing", {}) == "'nope.nothing' is not in the event catalog"


def test_docs_events_md_is_generated_from_the_catalog() -> None:
    text = events_doc.DOC.read_text()
    assert events_doc.updated(text) == text, "run python -m tools.events_doc"
    for entry in catalog():
        assert f"#### `{entry.type}`" in text
