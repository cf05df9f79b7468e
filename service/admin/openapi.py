"""The admin API's OpenAPI 3.0 description, served at /openapi.json.

Schemathesis fuzzes the running API from it in the test suite (tests/test_api_fuzz.py), so
a route or a status code that the code has and this does not (or the reverse) fails the suite.
"""

from __future__ import annotations

from typing import Any, Final

from service import __version__
from service.admin import openapi_features as features
from service.dead_letters.model import DEAD_LETTER_REASONS
from service.subscriptions.model import (
    MAX_ATTEMPTS,
    MAX_EVENT_TYPES,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_NAME_LENGTH,
    MAX_TIMEOUT_SECONDS,
    MAX_URL_LENGTH,
    MAX_WINDOW,
    METHODS,
)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_ERRORS: Final = {
    "400": _error("Malformed JSON or query"),
    "401": _error("Missing or invalid bearer token"),
    "413": _error("Request body too large"),
    "422": _error("A field that cannot work; `field` names it"),
    "503": _error("The subscriptions topic is not answering; retry"),
}
_SUB_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^sub_[0-9a-f]{24}$"},
}

_RATE_LIMIT: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["per_second"],
    "properties": {
        "per_second": {
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "maximum": 10000,
        },
        "burst": {"type": "integer", "minimum": 1, "maximum": 10000, "nullable": True},
    },
}
_WRITABLE: Final = {
    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
    "url": {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "example": "https://crm.example.com/hooks",
    },
    "method": {"type": "string", "enum": list(METHODS), "default": "POST"},
    "event_types": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_EVENT_TYPES,
        "items": {"type": "string", "example": "call.*"},
    },
    "headers": {
        "type": "object",
        "maxProperties": MAX_HEADERS,
        "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE},
    },
    "rate_limit": {**_RATE_LIMIT, "nullable": True},
    "max_in_flight": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
    "timeout_seconds": {
        "type": "number",
        "exclusiveMinimum": True,
        "minimum": 0,
        "maximum": MAX_TIMEOUT_SECONDS,
        "default": 10,
    },
    "max_attempts": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_ATTEMPTS,
        "nullable": True,
        "description": "Attempts before a dead letter; null: one plus the retry schedule's length",
    },
    "retry_window_seconds": {
        "type": "number",
        "exclusiveMinimum": True,
        "minimum": 0,
        "maximum": MAX_WINDOW,
        "nullable": True,
        "description": "No retry later than this after the first attempt; null: the service's",
    },
    "enabled": {"type": "boolean", "default": True},
    **features.WRITABLE,
}
_TIME_QUERY: Final = {"type": "string", "format": "date-time", "example": "2026-11-22T00:00:00Z"}
_REPLAY_RESULT: Final = {
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

SPEC: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Switchboard admin API",
        "version": __version__,
        "description": "Webhook subscriptions of an AI voice-agent platform. Every /v1 route "
        "takes `Authorization: Bearer <operator token or tenant API key>`; a tenant key sees "
        "only its own tenant's resources (anything else answers 404).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
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
            },
            "SubscriptionCreate": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "url", "event_types"],
                "properties": {
                    "tenant_id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 256,
                        "description": "Defaults to the tenant of the API key; the operator "
                        "token must give it.",
                    },
                    **_WRITABLE,
                },
            },
            "SubscriptionPatch": {
                "type": "object",
                "additionalProperties": False,
                # null clears a field to its default; for these two, none.
                "properties": {
                    **_WRITABLE,
                    "headers": {**_WRITABLE["headers"], "nullable": True},
                    "filters": {**_WRITABLE["filters"], "nullable": True},
                },
            },
            "Subscription": {
                "type": "object",
                "required": [
                    "id",
                    "tenant_id",
                    "name",
                    "url",
                    "method",
                    "event_types",
                    "headers",
                    "max_in_flight",
                    "timeout_seconds",
                    "enabled",
                    "created_at",
                    "updated_at",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "tenant_id": {"type": "string"},
                    **_WRITABLE,
                    "previous_secret_expires_at": {"type": "string", "nullable": True},
                    "disabled_reason": {
                        "type": "string",
                        "nullable": True,
                        "description": "Why the service disabled it (410 Gone, failing too long)",
                    },
                    "disabled_at": {"type": "string", "nullable": True},
                    "failing_since": {
                        "type": "string",
                        "nullable": True,
                        "description": "Set when the endpoint's circuit opens "
                        "(circuit_failure_threshold failures in a row) and cleared by the "
                        "next success; null before that, even while attempts fail",
                    },
                    "created_at": {"type": "string"},
                    "updated_at": {"type": "string"},
                    "secret": {
                        "type": "string",
                        "description": "Only in the responses to create and rotate-secret.",
                    },
                    "warnings": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Only in the responses to create and update: what "
                        "matches nothing in the event catalog (accepted all the same).",
                    },
                },
            },
            "SubscriptionPage": {
                "type": "object",
                "required": ["data", "next_after"],
                "properties": {
                    "data": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Subscription"},
                    },
                    "next_after": {"type": "string", "nullable": True},
                },
            },
            "DeadLetter": {
                "type": "object",
                "required": [
                    "id",
                    "subscription_id",
                    "tenant_id",
                    "reason",
                    "attempts",
                    "dead_lettered_at",
                    "origin",
                    "event",
                ],
                "properties": {
                    "id": {"type": "string", "example": "dl_0_42"},
                    "subscription_id": {"type": "string"},
                    "tenant_id": {"type": "string"},
                    "reason": {"type": "string", "enum": list(DEAD_LETTER_REASONS)},
                    "attempts": {"type": "integer"},
                    "first_attempt_at": {"type": "string", "nullable": True},
                    "dead_lettered_at": {"type": "string"},
                    "last_error": {"type": "object", "nullable": True},
                    "origin": {"type": "object"},
                    "replay_of": {"type": "string", "nullable": True},
                    "replayed_at": {"type": "string", "nullable": True},
                    "event": {"type": "object"},
                },
            },
            "DeadLetterPage": {
                "type": "object",
                "required": ["data", "next_after"],
                "properties": {
                    "data": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}},
                    "next_after": {"type": "string", "nullable": True},
                },
            },
            **features.SCHEMAS,
            "ApiKey": {
                "type": "object",
                "required": ["id", "tenant_id", "name", "created_at"],
                "properties": {
                    "id": {"type": "string"},
                    "tenant_id": {"type": "string"},
                    "name": {"type": "string"},
                    "created_at": {"type": "string"},
                    "key": {"type": "string", "description": "Only when created."},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/subscriptions": {
            "post": {
                "summary": "Create a subscription; the response is the only one with its secret",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SubscriptionCreate"}
                        }
                    },
                },
                "responses": {
                    "201": _json("Subscription", "Created"),
                    "404": _error("A tenant key creating for another tenant"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "List subscriptions, a page at a time",
                "parameters": [
                    {"name": "tenant_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {"200": _json("SubscriptionPage", "A page"), **_ERRORS},
            },
        },
        "/v1/subscriptions/{id}": {
            "parameters": [_SUB_ID],
            "get": {
                "summary": "One subscription, without its secret",
                "responses": {
                    "200": _json("Subscription", "Found"),
                    "404": _error("No such subscription"),
                    **_ERRORS,
                },
            },
            "patch": {
                "summary": "Change some fields",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SubscriptionPatch"}
                        }
                    },
                },
                "responses": {
                    "200": _json("Subscription", "Updated"),
                    "404": _error("No such subscription"),
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Delete",
                "responses": {
                    "204": {"description": "Deleted"},
                    "404": _error("No such subscription"),
                    **_ERRORS,
                },
            },
        },
        "/v1/subscriptions/{id}/rotate-secret": {
            "parameters": [_SUB_ID],
            "post": {
                "summary": "A new secret; the old one keeps signing for grace_seconds",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "grace_seconds": {
                                        "type": "integer",
                                        "minimum": 0,
                                        "maximum": 604800,
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("Subscription", "Rotated, with the new secret"),
                    "404": _error("No such subscription"),
                    **_ERRORS,
                },
            },
        },
        "/v1/subscriptions/{id}/recover": {
            "parameters": [_SUB_ID],
            "post": {
                "summary": "Send again every dead letter of this subscription since a time",
                "parameters": [
                    {"name": "since", "in": "query", "required": True, "schema": _TIME_QUERY}
                ],
                "responses": {
                    "200": _REPLAY_RESULT,
                    "404": _error("No such subscription"),
                    **_ERRORS,
                },
            },
        },
        "/v1/dead-letters": {
            "get": {
                "summary": "Dead letters, oldest first, a page at a time",
                "parameters": [
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("subscription_id", "tenant_id", "after")
                ]
                + [
                    {
                        "name": "reason",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(DEAD_LETTER_REASONS)},
                    },
                    {
                        "name": "replayed",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["true", "false"]},
                    },
                    {"name": "since", "in": "query", "schema": _TIME_QUERY},
                    {"name": "until", "in": "query", "schema": _TIME_QUERY},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {"200": _json("DeadLetterPage", "A page"), **_ERRORS},
            },
        },
        "/v1/dead-letters/replay": {
            "post": {
                "summary": "Re-enqueue dead letters as fresh deliveries; each at most once",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "description": "ids, or a subscription_id or tenant_id, "
                                "optionally within since..until",
                                "properties": {
                                    "ids": {"type": "array", "items": {"type": "string"}},
                                    "subscription_id": {"type": "string"},
                                    "tenant_id": {"type": "string"},
                                    "since": {"type": "string", "format": "date-time"},
                                    "until": {"type": "string", "format": "date-time"},
                                },
                            },
                            "example": {
                                "subscription_id": "sub_0123456789abcdef01234567",
                                "since": "2026-11-22T00:00:00Z",
                            },
                        }
                    },
                },
                "responses": {"200": _REPLAY_RESULT, **_ERRORS},
            },
        },
        "/v1/api-keys": {
            "post": {
                "summary": "Create a tenant API key (operator token only); shown once",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["tenant_id"],
                                "properties": {
                                    "tenant_id": {
                                        "type": "string",
                                        "minLength": 1,
                                        "maxLength": 256,
                                    },
                                    "name": {"type": "string", "maxLength": 200},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json("ApiKey", "Created, with the key"),
                    "404": _error("Not for tenant keys"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "List API keys (operator token only)",
                "parameters": [{"name": "tenant_id", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "Keys, without the keys themselves"},
                    "404": _error("Not for tenant keys"),
                    **_ERRORS,
                },
            },
        },
        "/v1/api-keys/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "delete": {
                "summary": "Revoke an API key",
                "responses": {
                    "204": {"description": "Revoked"},
                    "404": _error("No such key"),
                    **_ERRORS,
                },
            },
        },
        **features.paths(_SUB_ID, _ERRORS, _TIME_QUERY),
    },
}
