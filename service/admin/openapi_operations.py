"""The parts of the OpenAPI description for operators: dead letters and tenant API keys."""

from __future__ import annotations

from typing import Any, Final

from service.admin.openapi_common import (
    ERRORS,
    REPLAY_RESULT,
    TIME_QUERY,
    body,
    error,
    page,
    page_limit,
    request,
)
from service.dead_letters.model import DEAD_LETTER_REASONS

SCHEMAS: Final[dict[str, Any]] = {
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
    "DeadLetterPage": page("DeadLetter"),
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
}
_OPERATOR_ONLY: Final = error("Not for tenant keys")

PATHS: Final[dict[str, Any]] = {
    "/v1/dead-letters": {
        "get": {
            "summary": "Dead letters, oldest first, a page at a time",
            "parameters": [
                *(
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("subscription_id", "tenant_id", "after")
                ),
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
                {"name": "since", "in": "query", "schema": TIME_QUERY},
                {"name": "until", "in": "query", "schema": TIME_QUERY},
                page_limit(),
            ],
            "responses": {"200": body("DeadLetterPage", "A page"), **ERRORS},
        },
    },
    "/v1/dead-letters/replay": {
        "post": {
            "summary": "Re-enqueue dead letters as fresh deliveries; each at most once",
            "requestBody": request(
                {
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
                example={
                    "subscription_id": "sub_0123456789abcdef01234567",
                    "since": "2026-11-22T00:00:00Z",
                },
            ),
            "responses": {"200": REPLAY_RESULT, **ERRORS},
        },
    },
    "/v1/api-keys": {
        "post": {
            "summary": "Create a tenant API key (operator token only); shown once",
            "requestBody": request(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["tenant_id"],
                    "properties": {
                        "tenant_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "name": {"type": "string", "maxLength": 200},
                    },
                }
            ),
            "responses": {
                "201": body("ApiKey", "Created, with the key"),
                "404": _OPERATOR_ONLY,
                **ERRORS,
            },
        },
        "get": {
            "summary": "List API keys (operator token only)",
            "parameters": [{"name": "tenant_id", "in": "query", "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "Keys, without the keys themselves"},
                "404": _OPERATOR_ONLY,
                **ERRORS,
            },
        },
    },
    "/v1/api-keys/{id}": {
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "delete": {
            "summary": "Revoke an API key",
            "responses": {"204": {"description": "Revoked"}, "404": error("No such key"), **ERRORS},
        },
    },
}
