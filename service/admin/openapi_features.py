"""The parts of the OpenAPI description for request shaping, the catalog and the delivery log.

Merged into `service/openapi.py`'s SPEC; kept apart so that each file stays readable.
"""

from __future__ import annotations

from typing import Any, Final

from service.attempt_log.record import TRIGGERS
from service.delivery.outcomes import Outcome
from service.delivery.templates import MAX_FIELDS
from service.routing.decision import OUTCOMES as ROUTING_OUTCOMES
from service.routing.filters import MAX_FILTERS, MAX_IN_VALUES, OPS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_STRING: Final = {"type": "string", "minLength": 1, "maxLength": 4096}
_AUTH_KINDS: Final[dict[str, dict[str, Any]]] = {
    "api_key": {"required": ["key"], "properties": {"header": {"type": "string"}, "key": _STRING}},
    "basic": {"required": ["username", "password"],
              "properties": {"username": _STRING, "password": _STRING}},
    "bearer": {"required": ["token"], "properties": {"token": _STRING}},
    "oauth2_client_credentials": {
        "required": ["token_url", "client_id", "client_secret"],
        "properties": {
            "token_url": {"type": "string", "format": "uri"},
            "client_id": _STRING,
            "client_secret": _STRING,
            "scope": {"type": "string", "nullable": True},
            "audience": {"type": "string", "nullable": True},
            "client_auth": {"type": "string", "enum": ["basic", "body"], "default": "basic"},
        },
    },
}  # fmt: skip

# Fields of SubscriptionCreate and SubscriptionPatch (and of the Subscription view).
WRITABLE: Final[dict[str, Any]] = {
    "filters": {
        "type": "array",
        "maxItems": MAX_FILTERS,
        "description": "All must hold (docs/events.md)",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "op"],
            "properties": {
                "path": {"type": "string", "example": "data.agent.id"},
                "op": {"type": "string", "enum": list(OPS)},
                "value": {"description": f"in/not_in: a list of 1..{MAX_IN_VALUES}"},
            },
        },
        "example": [{"path": "data.call.duration", "op": "gt", "value": 60}],
    },
    "strict_schema": {"type": "boolean", "default": False},
    "body_template": {
        "nullable": True,
        "description": "A JSON value whose strings may reference event fields",
        "example": {"phone": "{{data.contact.phoneNumber}}", "event": "{{type}}"},
    },
    "body_fields": {
        "type": "array",
        "nullable": True,
        "minItems": 1,
        "maxItems": MAX_FIELDS,
        "items": {"type": "string"},
        "example": ["data.contact.phoneNumber", "data.summary"],
    },
    "auth": {
        "nullable": True,
        "oneOf": [
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", *kind["required"]],
                "properties": {"type": {"type": "string", "enum": [name]}, **kind["properties"]},
            }
            for name, kind in _AUTH_KINDS.items()
        ],
        "example": {"type": "bearer", "token": "********"},
    },
    "success": {
        "type": "object",
        "nullable": True,
        "additionalProperties": False,
        "properties": {
            "status_codes": {"type": "array", "items": {"type": "integer"}, "maxItems": 50},
            "json_path": {"type": "string", "nullable": True},
            "json_value": {"default": True},
        },
        "example": {"status_codes": [200], "json_path": "result.accepted", "json_value": True},
    },
}

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
    },
}
_ROUTING: Final = {
    "type": "object",
    "required": ["at", "outcome", "matched", "filtered", "schema_refused", "quarantine"],
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "event_type": {"type": "string", "nullable": True},
        "tenant_id": {"type": "string", "nullable": True},
        "outcome": {"type": "string", "enum": list(ROUTING_OUTCOMES)},
        "matched": {"type": "array", "items": {"type": "string"}},
        "filtered": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "subscription_id": {"type": "string"},
                    "condition": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "path": {"type": "string"},
                            "op": {"type": "string"},
                        },
                    },
                },
            },
        },
        "schema_refused": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"subscription_id": {"type": "string"}, "error": {"type": "string"}},
            },
        },
        "quarantine": {
            "type": "object",
            "nullable": True,
            "properties": {"reason": {"type": "string"}, "detail": {"type": "string"}},
        },
    },
}
_WINDOW: Final = {
    "type": "object",
    "properties": {
        "attempts": {"type": "integer"},
        "succeeded": {"type": "integer"},
        "failed": {"type": "integer"},
        "success_rate": {"type": "number", "nullable": True},
        "latency_ms": {"type": "object"},
    },
}
SCHEMAS: Final[dict[str, Any]] = {
    "Attempt": _ATTEMPT,
    "Routing": _ROUTING,
    "EventRecord": {
        "type": "object",
        "required": ["event_id", "routing", "attempts", "more_attempts"],
        "properties": {
            "event_id": {"type": "string"},
            "routing": {**_ref("Routing"), "nullable": True},
            "attempts": {"type": "array", "items": _ref("Attempt")},
            "more_attempts": {"type": "boolean"},
        },
    },
    "AttemptPage": {
        "type": "object",
        "required": ["data", "next_before", "history_from"],
        "properties": {
            "data": {"type": "array", "items": _ref("Attempt")},
            "next_before": {"type": "string", "nullable": True},
            "history_from": {"type": "string", "nullable": True},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["subscription_id", "windows"],
        "properties": {
            "subscription_id": {"type": "string"},
            "windows": {
                "type": "object",
                "properties": {"5m": _WINDOW, "1h": _WINDOW, "24h": _WINDOW},
            },
            "history_from": {"type": "string", "nullable": True},
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


def paths(
    sub_id: dict[str, Any], errors: dict[str, Any], time_query: dict[str, Any]
) -> dict[str, Any]:
    not_found = {"description": "Not found", "content": errors["401"]["content"]}
    listing = [
        {"name": "event_type", "in": "query", "schema": {"type": "string"}},
        {"name": "outcome", "in": "query",
         "schema": {"type": "string", "enum": [*(o.value for o in Outcome), "failure"]}},
        {"name": "trigger", "in": "query", "schema": {"type": "string", "enum": list(TRIGGERS)}},
        {"name": "since", "in": "query", "schema": time_query},
        {"name": "until", "in": "query", "schema": time_query},
        {"name": "before", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ]  # fmt: skip
    return {
        "/v1/subscriptions/{id}/test": {
            "parameters": [sub_id],
            "post": {
                "summary": "Send one request now through the real path; returns the attempt",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "event_type": {"type": "string", "example": "call.ended"},
                                    "data": {"type": "object", "nullable": True},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _ok("TestResult", "The attempt"), "404": not_found, **errors},
            },
        },
        "/v1/subscriptions/{id}/attempts": {
            "parameters": [sub_id],
            "get": {
                "summary": "Recent attempts of a subscription, newest first",
                "parameters": listing,
                "responses": {"200": _ok("AttemptPage", "A page"), "404": not_found, **errors},
            },
        },
        "/v1/subscriptions/{id}/stats": {
            "parameters": [sub_id],
            "get": {
                "summary": "Success rate, attempts and latency over the last 5 min, 1 h, 24 h",
                "responses": {"200": _ok("Stats", "Stats"), "404": not_found, **errors},
            },
        },
        "/v1/events/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "What became of one event: its routing decision and its attempts",
                "responses": {
                    "200": _ok("EventRecord", "Known"),
                    "404": not_found,
                    **errors,
                },
            },
        },
        "/v1/events/{id}/attempts": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "Every attempt made for one event, across its subscriptions",
                "parameters": listing,
                "responses": {"200": _ok("AttemptPage", "A page"), **errors},
            },
        },
        "/v1/event-types": {
            "get": {
                "summary": "The event catalog",
                "parameters": [{"name": "group", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Every catalogued type"}, **errors},
            },
        },
        "/v1/event-types/{type}": {
            "parameters": [
                {"name": "type", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "One event type: meaning, JSON Schema of its data, a sample",
                "responses": {"200": _ok("EventType", "Found"), "404": not_found, **errors},
            },
        },
    }
