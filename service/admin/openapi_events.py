"""The part of the OpenAPI description for what became of one event (event_routes.py)."""

from __future__ import annotations

from typing import Any, Final

from service.admin.openapi_common import ERRORS, body, error, ref
from service.routing.decision import OUTCOMES

_CONDITION: Final = {
    "type": "object",
    "description": "The filter condition that failed: its index in `filters`, path, operator",
    "properties": {
        "index": {"type": "integer"},
        "path": {"type": "string"},
        "op": {"type": "string"},
    },
}

SCHEMAS: Final[dict[str, Any]] = {
    "Routing": {
        "type": "object",
        "required": ["at", "outcome", "matched", "filtered", "schema_refused", "quarantine"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "event_type": {"type": "string", "nullable": True},
            "tenant_id": {"type": "string", "nullable": True},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "matched": {"type": "array", "items": {"type": "string"}},
            "filtered": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"subscription_id": {"type": "string"}, "condition": _CONDITION},
                },
            },
            "schema_refused": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "subscription_id": {"type": "string"},
                        "error": {"type": "string"},
                    },
                },
            },
            "quarantine": {
                "type": "object",
                "nullable": True,
                "properties": {"reason": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
    "EventRecord": {
        "type": "object",
        "required": ["event_id", "routing", "attempts", "more_attempts"],
        "properties": {
            "event_id": {"type": "string"},
            "routing": {**ref("Routing"), "nullable": True},
            "attempts": {"type": "array", "items": ref("Attempt")},
            "more_attempts": {"type": "boolean"},
        },
    },
}

PATHS: Final[dict[str, Any]] = {
    "/v1/events/{id}": {
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "get": {
            "summary": "What became of one event: its routing decision and its attempts",
            "responses": {
                "200": body("EventRecord", "Known"),
                "404": error("No record of this event"),
                **ERRORS,
            },
        },
    },
}
