"""The part of the OpenAPI description for the customers' portal: its session links."""

from __future__ import annotations

from typing import Any, Final

from service.admin.openapi_common import ERRORS, body, error, request
from service.portal.tokens import DEFAULT_SESSION_SECONDS, MAX_SESSION_SECONDS, MIN_SESSION_SECONDS

SCHEMAS: Final[dict[str, Any]] = {
    "PortalSession": {
        "type": "object",
        "required": ["url", "expires_at", "tenant_id", "read_only", "session_seconds"],
        "properties": {
            "url": {"type": "string", "description": "Opens the portal once, until expires_at",
                    "example": "https://hooks.example.com/portal/start?token=eyJ…"},
            "expires_at": {"type": "string", "description": "When the link stops opening"},
            "tenant_id": {"type": "string"},
            "read_only": {"type": "boolean"},
            "session_seconds": {"type": "integer"},
        },
    },
}  # fmt: skip

PATHS: Final[dict[str, Any]] = {
    "/v1/portal-sessions": {
        "post": {
            "summary": "A one-time link into the customers' portal for one tenant",
            "requestBody": request(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "tenant_id": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 256,
                            "description": "Defaults to the API key's tenant; the "
                            "operator token must give it",
                        },
                        "session_seconds": {
                            "type": "integer",
                            "minimum": MIN_SESSION_SECONDS,
                            "maximum": MAX_SESSION_SECONDS,
                            "default": DEFAULT_SESSION_SECONDS,
                        },
                        "read_only": {"type": "boolean", "default": False},
                    },
                },
                required=False,
                example={"tenant_id": "acme", "session_seconds": 3600},
            ),
            "responses": {
                "201": body("PortalSession", "The link"),
                "404": error("Another tenant than the API key's"),
                **ERRORS,
            },
        },
    },
}
