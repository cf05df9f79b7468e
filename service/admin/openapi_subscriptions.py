"""The subscription routes of the OpenAPI description, and their schemas.

The schemas are generated from the declaration (service/subscriptions/fields.py):
a field added there appears in the create, patch and view schemas without an edit here.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from service.admin.openapi_common import (
    ERRORS,
    REPLAY_RESULT,
    SUB_ID,
    TIME_QUERY,
    body,
    error,
    page,
    page_limit,
    ref,
    request,
)
from service.admin.openapi_schema import components
from service.config import MAX_ROTATION_GRACE
from service.ordering.keys import MAX_KEY_CHARS
from service.subscriptions.fields import (
    HIDDEN_FIELDS,
    Subscription,
    SubscriptionCreate,
    SubscriptionPatch,
)

# Besides the stored fields, the view says how the endpoint is doing (subscription_routes.py).
_HEALTH: Final = {
    "failing_since": {
        "type": "string",
        "nullable": True,
        "description": "Set when the endpoint's circuit opens and cleared by the next "
        "success; null before that, even while attempts fail (docs/api.md)",
    }
}
_SECRET: Final = {
    "type": "string",
    "description": "Only in the responses to create and rotate-secret.",
}
_WARNINGS: Final = {
    "type": "array",
    "items": {"type": "string"},
    "description": "Only in the responses to create and update: what matches nothing in the "
    "event catalog (accepted all the same; service/subscriptions/checks.py).",
}


def schemas(
    create: type[msgspec.Struct], patch: type[msgspec.Struct], stored: type[msgspec.Struct]
) -> dict[str, Any]:
    """The components for the three subscription types (under the API's names for them) and
    for every type they refer to."""
    generated = components(create, patch, stored)
    named = {
        "SubscriptionCreate": generated.pop(create.__name__),
        "SubscriptionPatch": generated.pop(patch.__name__),
        "Subscription": _view(generated.pop(stored.__name__)),
    }
    return {**generated, **named}


def _view(stored: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a subscription (Subscription.public()): every stored field but the
    secrets, each always present; the signing secret only where the route returns it."""
    shown = {k: v for k, v in stored["properties"].items() if k not in HIDDEN_FIELDS}
    return {
        "type": "object",
        "required": [*shown, *_HEALTH],
        "properties": {**shown, **_HEALTH, "secret": _SECRET, "warnings": _WARNINGS},
    }


SCHEMAS: Final[dict[str, Any]] = {
    **schemas(SubscriptionCreate, SubscriptionPatch, Subscription),
    "SubscriptionPage": page("Subscription"),
}
_NOT_FOUND: Final = error("No such subscription")

PATHS: Final[dict[str, Any]] = {
    "/v1/subscriptions": {
        "post": {
            "summary": "Create a subscription; the response is the only one with its secret",
            "requestBody": request(ref("SubscriptionCreate")),
            "responses": {
                "201": body("Subscription", "Created"),
                "404": error("A tenant key creating for another tenant"),
                **ERRORS,
            },
        },
        "get": {
            "summary": "List subscriptions, a page at a time",
            "parameters": [
                {"name": "tenant_id", "in": "query", "schema": {"type": "string"}},
                {"name": "after", "in": "query", "schema": {"type": "string"}},
                page_limit(),
            ],
            "responses": {"200": body("SubscriptionPage", "A page"), **ERRORS},
        },
    },
    "/v1/subscriptions/{id}": {
        "parameters": [SUB_ID],
        "get": {
            "summary": "One subscription, without its secret",
            "responses": {"200": body("Subscription", "Found"), "404": _NOT_FOUND, **ERRORS},
        },
        "patch": {
            "summary": "Change some fields",
            "requestBody": request(ref("SubscriptionPatch")),
            "responses": {"200": body("Subscription", "Updated"), "404": _NOT_FOUND, **ERRORS},
        },
        "delete": {
            "summary": "Delete",
            "responses": {"204": {"description": "Deleted"}, "404": _NOT_FOUND, **ERRORS},
        },
    },
    "/v1/subscriptions/{id}/rotate-secret": {
        "parameters": [SUB_ID],
        "post": {
            "summary": "A new secret; the old one keeps signing for grace_seconds",
            "requestBody": request(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "grace_seconds": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_ROTATION_GRACE,
                        }
                    },
                },
                required=False,
            ),
            "responses": {
                "200": body("Subscription", "Rotated, with the new secret"),
                "404": _NOT_FOUND,
                **ERRORS,
            },
        },
    },
    "/v1/subscriptions/{id}/recover": {
        "parameters": [SUB_ID],
        "post": {
            "summary": "Send again every dead letter of this subscription since a time",
            "parameters": [
                {"name": "since", "in": "query", "required": True, "schema": TIME_QUERY}
            ],
            "responses": {"200": REPLAY_RESULT, "404": _NOT_FOUND, **ERRORS},
        },
    },
    "/v1/subscriptions/{id}/ordering/release": {
        "parameters": [SUB_ID],
        "post": {
            "summary": "Release an ordering key that a dead letter stopped (docs/ordering.md)",
            "requestBody": request(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["key"],
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS}
                    },
                }
            ),
            "responses": {
                "202": {"description": "The release is durable; the key's owner applies it"},
                "404": _NOT_FOUND,
                "409": {"description": "The subscription has no ordering"},
                **ERRORS,
            },
        },
    },
}
