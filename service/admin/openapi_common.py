"""Pieces that several parts of the OpenAPI description use: references, responses, parameters."""

from __future__ import annotations

from typing import Any, Final


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(name: str, description: str) -> dict[str, Any]:
    """A response whose JSON body is the component `name`."""
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


def error(description: str) -> dict[str, Any]:
    return body("Error", description)


def request(schema: dict[str, Any], *, required: bool = True, **extra: Any) -> dict[str, Any]:
    """A JSON request body; `extra` goes beside the schema (an example)."""
    return {"required": required, "content": {"application/json": {"schema": schema, **extra}}}


def page_limit() -> dict[str, Any]:
    return {"name": "limit", "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}  # fmt: skip


ERRORS: Final = {
    "400": error("Malformed JSON or query"),
    "401": error("Missing or invalid bearer token"),
    "413": error("Request body too large"),
    "422": error("A field that cannot work; `field` names it"),
    "503": error(
        "The subscriptions topic (or, for the history routes, the history store) is not "
        "answering, or no history store is configured (history_not_configured)"
    ),
}
ERROR_SCHEMA: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "nullable": True},
            },
        }
    },
}
SUB_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^sub_[0-9a-f]{24}$"},
}
TIME_QUERY: Final = {"type": "string", "format": "date-time", "example": "2026-11-22T00:00:00Z"}
REPLAY_RESULT: Final = {
    "description": "Re-enqueued (`replayed`) and left alone with the reason (`skipped`)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["replayed", "skipped", "more"],
                "properties": {
                    "replayed": {"type": "array", "items": {"type": "string"}},
                    "skipped": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "reason": {
                                    "type": "string",
                                    "enum": ["already_replayed", "subscription_deleted",
                                             "subscription_disabled", "not_found",
                                             "not_matching"],
                                },
                            },
                        },
                    },
                    "more": {"type": "boolean", "description": "More than one request's worth"},
                },
            }
        }
    },
}  # fmt: skip


def page(item: str, cursor: str = "next_after") -> dict[str, Any]:
    """A page of the component `item`, with the cursor for the next one (null: the last)."""
    return {
        "type": "object",
        "required": ["data", cursor],
        "properties": {
            "data": {"type": "array", "items": ref(item)},
            cursor: {"type": "string", "nullable": True},
        },
    }
