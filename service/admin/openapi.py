"""The admin API's OpenAPI 3.0 description, served at /openapi.json.

Schemathesis fuzzes the running API from it in the test suite
(tests/system/test_admin_api_fuzz.py), so a route or a status code that the code has and this
does not (or the reverse) fails the suite. The parts live by resource; this joins them.
"""

from __future__ import annotations

from typing import Any, Final

from service import __version__
from service.admin import (
    openapi_delivery_log,
    openapi_events,
    openapi_operations,
    openapi_portal,
    openapi_subscriptions,
)
from service.admin.openapi_common import ERROR_SCHEMA

_PARTS: Final = (openapi_subscriptions, openapi_delivery_log, openapi_events, openapi_operations,
                 openapi_portal)  # fmt: skip


def joined(*parts: dict[str, Any]) -> dict[str, Any]:
    """The union of `parts`; a name defined in two of them is an error, not an override."""
    out: dict[str, Any] = {}
    for part in parts:
        if twice := out.keys() & part.keys():
            raise ValueError(f"described twice: {sorted(twice)}")
        out.update(part)
    return out


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
        "schemas": joined({"Error": ERROR_SCHEMA}, *(part.SCHEMAS for part in _PARTS)),
    },
    "security": [{"bearer": []}],
    "paths": joined(*(part.PATHS for part in _PARTS)),
}
