"""The parts of the OpenAPI description for test sends, the delivery log and the catalog.

The delivery log answers from the history store: 503 `history_not_configured` without one,
`history_unavailable` while it is not answering (ERRORS' 503).
"""

from __future__ import annotations

from typing import Any, Final

from service.admin.attempt_routes import SEARCH_KEYS, WINDOWS
from service.admin.openapi_common import (
    ERRORS,
    SUB_ID,
    TIME_QUERY,
    body,
    error,
    page,
    page_limit,
    request,
)
from service.attempt_log.record import CORRELATION_KEYS, TRIGGERS
from service.delivery.outcomes import Outcome

_ATTEMPT: Final = {
    "type": "object",
    "required": ["id", "at", "subscription_id", "event_id", "outcome", "latency_ms", "trigger"],
    "properties": {
        "id": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "subscription_id": {"type": "string"},
        "tenant_id": {"type": "string"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "webhook_id": {"type": "string"},
        "attempt": {"type": "integer"},
        "trigger": {"type": "string", "enum": list(TRIGGERS)},
        "method": {"type": "string"},
        "url": {"type": "string"},
        "outcome": {"type": "string", "enum": [o.value for o in Outcome]},
        "status": {"type": "integer", "nullable": True},
        "latency_ms": {"type": "number"},
        "error": {"type": "string", "nullable": True},
        "response_excerpt": {"type": "string"},
        "replay_of": {
            "type": "string",
            "nullable": True,
            "description": "The dead letter a replay (trigger replay) sends again",
        },
        **{key: {"type": "string", "nullable": True} for key in CORRELATION_KEYS},
    },
}
_WINDOW: Final = {
    "type": "object",
    "properties": {
        "attempts": {"type": "integer"},
        "succeeded": {"type": "integer"},
        "failed": {"type": "integer"},
        "success_rate": {"type": "number", "nullable": True},
        "latency_ms": {
            "type": "object",
            "description": "Estimated from the roll-ups' latency histogram; null without attempts",
            "properties": {q: {"type": "number", "nullable": True} for q in ("p50", "p95", "p99")},
        },
    },
}
_HISTORY_FROM: Final = {
    "type": "string",
    "nullable": True,
    "description": "The start of retention (HISTORY_RETENTION_DAYS): nothing older is kept",
}


def _with_history(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` saying since when the log has records (null: none yet)."""
    return {
        **schema,
        "required": [*schema["required"], "history_from"],
        "properties": {**schema["properties"], "history_from": _HISTORY_FROM},
    }


SCHEMAS: Final[dict[str, Any]] = {
    "Attempt": _ATTEMPT,
    "AttemptPage": _with_history(page("Attempt", cursor="next_before")),
    "Stats": {
        "type": "object",
        "required": ["subscription_id", "windows"],
        "properties": {
            "subscription_id": {"type": "string"},
            "windows": {
                "type": "object",
                "properties": {name: _WINDOW for name, _ in WINDOWS},
            },
            "history_from": _HISTORY_FROM,
        },
    },
    "EventType": {
        "type": "object",
        "required": ["type", "group", "description", "schema", "sample"],
        "properties": {
            "type": {"type": "string", "example": "call.summary_ready"},
            "group": {"type": "string"},
            "description": {"type": "string"},
            "schema": {"type": "object"},
            "sample": {"type": "object"},
        },
    },
    "TestResult": {
        "type": "object",
        "required": ["event_id", "request", "outcome", "delivered", "latency_ms"],
        "properties": {
            "event_id": {"type": "string"},
            "request": {
                "type": "object",
                "description": "As sent; credentials masked",
                "properties": {
                    "method": {"type": "string"},
                    "url": {"type": "string"},
                    "headers": {"type": "object"},
                    "body": {"type": "string", "nullable": True},
                },
            },
            "outcome": {"type": "string"},
            "delivered": {"type": "boolean"},
            "status": {"type": "integer", "nullable": True},
            "latency_ms": {"type": "number"},
            "error": {"type": "string", "nullable": True},
            "response_excerpt": {"type": "string"},
        },
    },
}


_NOT_FOUND: Final = error("Not found")
_LISTING: Final = [
    {"name": "event_type", "in": "query", "schema": {"type": "string"}},
    {"name": "outcome", "in": "query",
     "schema": {"type": "string", "enum": [*(o.value for o in Outcome), "failure"]}},
    {"name": "trigger", "in": "query", "schema": {"type": "string", "enum": list(TRIGGERS)}},
    {"name": "since", "in": "query", "schema": TIME_QUERY},
    {"name": "until", "in": "query", "schema": TIME_QUERY},
    {"name": "before", "in": "query", "schema": {"type": "string"}},
    page_limit(),
]  # fmt: skip

PATHS: Final[dict[str, Any]] = {
    "/v1/subscriptions/{id}/test": {
        "parameters": [SUB_ID],
        "post": {
            "summary": "Send one request now through the real path; returns the attempt",
            "requestBody": request(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "event_type": {"type": "string", "example": "call.ended"},
                        "data": {"type": "object", "nullable": True},
                    },
                },
                required=False,
            ),
            "responses": {"200": body("TestResult", "The attempt"), "404": _NOT_FOUND, **ERRORS},
        },
    },
    "/v1/attempts": {
        "get": {
            "summary": "Attempts by one correlation key or webhook-id, newest first; a tenant "
            "key sees its own tenant's only, the operator may add tenant_id",
            "parameters": [
                *(
                    {"name": key, "in": "query", "schema": {"type": "string", "minLength": 1}}
                    for key in SEARCH_KEYS
                ),
                {"name": "tenant_id", "in": "query", "schema": {"type": "string"}},
                *_LISTING,
            ],
            "responses": {"200": body("AttemptPage", "A page"), **ERRORS},
        },
    },
    "/v1/subscriptions/{id}/attempts": {
        "parameters": [SUB_ID],
        "get": {
            "summary": "Recent attempts of a subscription, newest first",
            "parameters": _LISTING,
            "responses": {"200": body("AttemptPage", "A page"), "404": _NOT_FOUND, **ERRORS},
        },
    },
    "/v1/subscriptions/{id}/stats": {
        "parameters": [SUB_ID],
        "get": {
            "summary": "Success rate, attempts and latency (p50/p95/p99) over the last 5 min, "
            "1 h, 24 h, 7 d and 30 d, from per-minute roll-ups",
            "responses": {"200": body("Stats", "Stats"), "404": _NOT_FOUND, **ERRORS},
        },
    },
    "/v1/events/{id}/attempts": {
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "get": {
            "summary": "Every attempt made for one event, across its subscriptions",
            "parameters": _LISTING,
            "responses": {"200": body("AttemptPage", "A page"), **ERRORS},
        },
    },
    "/v1/event-types": {
        "get": {
            "summary": "The event catalog",
            "parameters": [{"name": "group", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "Every catalogued type"}, **ERRORS},
        },
    },
    "/v1/event-types/{type}": {
        "parameters": [
            {"name": "type", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "get": {
            "summary": "One event type: meaning, JSON Schema of its data, a sample",
            "responses": {"200": body("EventType", "Found"), "404": _NOT_FOUND, **ERRORS},
        },
    },
}
