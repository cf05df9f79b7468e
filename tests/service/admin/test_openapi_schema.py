"""Generated JSON Schema (2020-12) rewritten for the OpenAPI 3.0 description, and the parts of
the description joined without one silently replacing another."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.admin.openapi import SPEC, joined
from service.admin.openapi_schema import openapi30


def test_a_nullable_type_becomes_nullable() -> None:
    schema = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None}
    assert openapi30(schema) == {"type": "integer", "minimum": 1, "nullable": True, "default": None}


def test_a_nullable_reference_keeps_a_wrapper() -> None:
    ref = {"$ref": "#/components/schemas/RateLimit"}
    assert openapi30({"anyOf": [ref, {"type": "null"}]}) == {"anyOf": [ref], "nullable": True}


def test_a_nullable_union_keeps_its_options() -> None:
    options = [{"$ref": "#/a"}, {"$ref": "#/b"}]
    out = openapi30({"anyOf": [*options, {"type": "null"}], "discriminator": {"propertyName": "t"}})
    assert out == {"anyOf": options, "discriminator": {"propertyName": "t"}, "nullable": True}


def test_exclusive_bounds_become_booleans() -> None:
    assert openapi30({"type": "number", "exclusiveMinimum": 0, "maximum": 30}) == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 30,
    }
    assert openapi30({"exclusiveMaximum": 2.5}) == {"maximum": 2.5, "exclusiveMaximum": True}


def test_examples_const_and_empty_required() -> None:
    out = openapi30({"type": "object", "required": [], "examples": [{"a": 1}, {"a": 2}]})
    assert out == {"type": "object", "example": {"a": 1}}
    assert openapi30({"const": "bearer"}) == {"enum": ["bearer"]}


def test_nested_schemas_are_rewritten_and_data_is_not() -> None:
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    data = {"examples": [1], "anyOf": [{"type": "null"}], "required": []}
    out = openapi30(
        {
            "type": "object",
            # Properties that happen to be named like keywords are properties.
            "properties": {"examples": nullable, "required": {"type": "boolean"}},
            "items": nullable,
            "additionalProperties": nullable,
            "oneOf": [nullable],
            "default": data,
            "examples": [data],
        }
    )
    widened = {"type": "string", "nullable": True}
    assert out["properties"] == {"examples": widened, "required": {"type": "boolean"}}
    assert out["items"] == out["additionalProperties"] == widened
    assert out["oneOf"] == [widened]
    assert out["default"] == data
    assert out["example"] == data


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


def test_the_served_description_is_openapi_30() -> None:
    found = list(_schemas(SPEC["components"]))
    assert len(found) > 100
    for schema in found:
        assert schema.get("type") != "null", schema
        assert schema.get("required", ["x"]) != [], schema
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(schema.get(bound, True), bool), schema


def test_a_name_described_twice_is_an_error() -> None:
    assert joined({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="'a'"):
        joined({"a": 1}, {"a": 1})
