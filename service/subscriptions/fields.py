"""The subscription's fields, declared once (SubscriptionSettings), and the types built from
that declaration: the stored Subscription, the API's SubscriptionCreate and SubscriptionPatch.

Validation that needs more than a type and a bound is service/subscriptions/model.py's
validate(); the OpenAPI schemas are generated from these types
(service/admin/openapi_subscriptions.py).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from service.delivery.success import SuccessCondition
from service.delivery.templates import MAX_FIELDS
from service.events.envelope import MAX_ID_LENGTH
from service.routing.filters import MAX_FILTERS, Filter
from service.subscriptions.auth import MASK, Auth, masked

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_EVENT_TYPES: Final = 100
MAX_HEADERS: Final = 30
MAX_HEADER_VALUE: Final = 2048
MAX_URL_LENGTH: Final = 2048
MAX_NAME_LENGTH: Final = 200
MAX_TIMEOUT_SECONDS: Final = 30.0  # a receiver slower than this holds a connection for nothing
DEFAULT_MAX_IN_FLIGHT: Final = 20
MAX_IN_FLIGHT: Final = 1000
MAX_ATTEMPTS: Final = 50
MAX_RATE: Final = 10_000  # per second, and the burst
# Retry topics keep records for a week; a longer window could outlive them.
MAX_WINDOW: Final = 7 * 86_400.0


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    per_second: Annotated[float, Meta(gt=0, le=MAX_RATE)]
    burst: Annotated[int, Meta(ge=1, le=MAX_RATE)] | None = None

    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, math.ceil(self.per_second))


class Ordering(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Deliveries with the same key reach the subscription one at a time, in source order
    (docs/ordering.md)."""

    key: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=256,
            description="Path to the key in the event; the catalog names a call's, a "
            "conversation's and a contact's (docs/ordering.md)",
            examples=["data.call.id"],
        ),
    ]
    # What a dead letter does to its key: "continue" delivers the deliveries it held back;
    # "hold" keeps them, and every later one of the key, until an operator releases the key.
    after_dead_letter: Literal["continue", "hold"] = "continue"


# The writable fields, declared once: the stored Subscription and SubscriptionCreate inherit
# them, SubscriptionPatch is generated from them, and the OpenAPI schemas are generated from
# those three (service/admin/openapi_subscriptions.py). A bound that validate() checks itself
# is a Meta constraint, so the API refuses it while decoding, naming the field. Stored records
# are decoded with the same constraints: loosen a bound freely, but tightening one makes older
# records that exceed it unreadable, so that needs a migration. Bounds that other modules
# check (filters, templates, success conditions) stay theirs and are only documented here.
class SubscriptionSettings(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH, examples=["CRM"])]
    url: Annotated[
        str,
        Meta(
            max_length=MAX_URL_LENGTH,
            examples=["https://crm.example.com/hooks"],
            extra_json_schema={"format": "uri"},
        ),
    ]
    method: Annotated[str, Meta(extra_json_schema={"enum": list(METHODS)})] = "POST"
    event_types: Annotated[
        tuple[str, ...],
        Meta(
            min_length=1,
            max_length=MAX_EVENT_TYPES,
            description="Exact types (call.ended), prefixes (call.*) or *",
            examples=[["call.ended", "call.*"]],
        ),
    ]
    # All must hold for an event of a subscribed type to be delivered (service/filters.py).
    filters: Annotated[
        tuple[Filter, ...],
        Meta(
            description="All must hold (docs/events.md)",
            extra_json_schema={"maxItems": MAX_FILTERS},
            examples=[[{"path": "data.call.duration", "op": "gt", "value": 60}]],
        ),
    ] = ()
    # Deliver only catalogued types whose data fits the catalog's schema.
    strict_schema: bool = False
    # At most one of the two; neither: the default envelope (service/templates.py).
    body_template: Annotated[
        Any,
        Meta(
            description="A JSON value whose strings may reference event fields",
            examples=[{"phone": "{{data.contact.phoneNumber}}", "event": "{{type}}"}],
        ),
    ] = None
    body_fields: Annotated[
        tuple[str, ...] | None,
        Meta(
            extra_json_schema={"minItems": 1, "maxItems": MAX_FIELDS},
            examples=[["data.contact.phoneNumber", "data.summary"]],
        ),
    ] = None
    headers: Annotated[
        dict[str, Annotated[str, Meta(max_length=MAX_HEADER_VALUE)]],
        Meta(max_length=MAX_HEADERS),
    ] = msgspec.field(default_factory=dict)
    auth: Annotated[Auth | None, Meta(examples=[{"type": "bearer", "token": MASK}])] = None
    success: Annotated[
        SuccessCondition | None,
        Meta(
            examples=[{"status_codes": [200], "json_path": "result.accepted", "json_value": True}]
        ),
    ] = None
    rate_limit: RateLimit | None = None
    max_in_flight: Annotated[int, Meta(ge=1, le=MAX_IN_FLIGHT)] = DEFAULT_MAX_IN_FLIGHT
    timeout_seconds: Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_SECONDS)] = 10.0
    # None: the service's retry schedule and window decide.
    max_attempts: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS)] | None,
        Meta(
            description="Attempts before a dead letter; null: one plus the retry schedule's length"
        ),
    ] = None
    retry_window_seconds: Annotated[
        Annotated[float, Meta(gt=0, le=MAX_WINDOW)] | None,
        Meta(description="No retry later than this after the first attempt; null: the service's"),
    ] = None
    # None: unordered, delivered as concurrently as the endpoint's limits allow.
    ordering: Ordering | None = None
    enabled: bool = True


# Stored, never shown by the API (Subscription.public()).
HIDDEN_FIELDS: Final = ("secret", "previous_secret")


class Subscription(SubscriptionSettings, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    # Set when the service disabled it (410 Gone, or failing for too long); cleared on enable.
    disabled_reason: Annotated[
        str | None, Meta(description="Why the service disabled it (410 Gone, failing too long)")
    ] = None
    disabled_at: str | None = None
    secret: str
    # After a rotation, the secret it replaced, still signing until it expires.
    previous_secret: str | None = None
    previous_secret_expires_at: str | None = None
    created_at: str
    updated_at: str

    def public(self) -> dict[str, object]:
        """The API view: everything but the secrets."""
        out: dict[str, object] = msgspec.to_builtins(self)
        for name in HIDDEN_FIELDS:
            del out[name]
        if self.auth is not None:
            out["auth"] = masked(self.auth)
        return out


class SubscriptionCreate(
    SubscriptionSettings, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    # None: the tenant of the API key that creates it (the operator token must name one).
    tenant_id: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_ID_LENGTH,
                description="Defaults to the API key's tenant; the operator token must give it",
            ),
        ]
        | None
    ) = None


# Fields with a default but no null of their own whose null in a PATCH clears them to the
# default (no filters, no custom headers), as docs/api.md promises for optional fields.
CLEARED_BY_NULL: Final = ("filters", "headers")


def patch_of(
    settings: type[msgspec.Struct], name: str, cleared_by_null: tuple[str, ...] = ()
) -> type[msgspec.Struct]:
    """A struct with every field of `settings`, each optional: unset (the default) leaves it
    as it is; null is accepted where the field's declared type accepts it, and for the fields
    of `cleared_by_null` (apply_patch sets those to their default)."""
    fields = []
    for f in msgspec.structs.fields(settings):
        typ = f.type | msgspec.UnsetType
        fields.append((f.name, typ | None if f.name in cleared_by_null else typ, msgspec.UNSET))
    return msgspec.defstruct(
        name, fields, module=__name__, frozen=True, kw_only=True, forbid_unknown_fields=True
    )


# Generated, so it cannot drift from the declaration. Typed as a plain Struct class (mypy
# cannot see generated fields); apply_patch reads it by field name.
SubscriptionPatch: Final = patch_of(SubscriptionSettings, "SubscriptionPatch", CLEARED_BY_NULL)
