"""The subscription fields are declared once (SubscriptionSettings): the create, patch and
stored types, new_subscription and the OpenAPI schemas follow the declaration. Checked by
introspection, and with a declaration that has one more field, so no list here can go stale."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from service.admin.openapi import SPEC
from service.admin.openapi_subscriptions import schemas
from service.delivery.netguard import AddressPolicy
from service.subscriptions.fields import (
    CLEARED_BY_NULL,
    HIDDEN_FIELDS,
    Subscription,
    SubscriptionCreate,
    SubscriptionPatch,
    SubscriptionSettings,
    patch_of,
)
from service.subscriptions.model import new_subscription

WRITABLE = msgspec.structs.fields(SubscriptionSettings)
NAMES = [f.name for f in WRITABLE]
COMPONENTS: dict[str, Any] = SPEC["components"]["schemas"]


def _accepts_null(typ: Any) -> bool:
    try:
        msgspec.convert(None, typ)
    except msgspec.ValidationError:
        return False
    return True


def test_the_declaration_is_not_empty() -> None:
    # Guards the introspection below against passing vacuously.
    assert {"name", "url", "event_types", "max_attempts"} <= set(NAMES)


@pytest.mark.parametrize("struct", [SubscriptionCreate, Subscription, SubscriptionPatch])
def test_every_writable_field_is_in_each_type(struct: type[msgspec.Struct]) -> None:
    assert set(NAMES) <= set(struct.__struct_fields__)


def test_create_and_stored_add_only_their_own_fields() -> None:
    assert set(SubscriptionCreate.__struct_fields__) - set(NAMES) == {"tenant_id"}
    assert set(SubscriptionPatch.__struct_fields__) == set(NAMES)


@pytest.mark.parametrize("field", WRITABLE, ids=NAMES)
def test_a_patch_field_is_optional_and_null_only_where_declared(
    field: msgspec.structs.FieldInfo,
) -> None:
    assert getattr(SubscriptionPatch(), field.name) is msgspec.UNSET
    body = msgspec.json.encode({field.name: None})
    # filters and headers: null clears them to none (apply_patch).
    if _accepts_null(field.type) or field.name in CLEARED_BY_NULL:
        assert getattr(msgspec.json.decode(body, type=SubscriptionPatch), field.name) is None
    else:
        with pytest.raises(msgspec.ValidationError, match=f"`\\$.{field.name}`"):
            msgspec.json.decode(body, type=SubscriptionPatch)


def test_patch_keeps_the_declared_constraints() -> None:
    with pytest.raises(msgspec.ValidationError, match="max_in_flight"):
        msgspec.json.decode(b'{"max_in_flight": 0}', type=SubscriptionPatch)


def test_new_subscription_copies_every_writable_field() -> None:
    req = msgspec.convert(
        {
            "tenant_id": "t",
            "name": "n",
            "url": "https://crm.example.com/h",
            "event_types": ["call.ended"],
            "method": "PUT",
            "strict_schema": True,
            "headers": {"X-A": "1"},
            "max_in_flight": 3,
            "timeout_seconds": 4.5,
            "max_attempts": 6,
            "retry_window_seconds": 70.0,
            "enabled": False,
            "body_fields": ["data"],
            "rate_limit": {"per_second": 2},
        },
        SubscriptionCreate,
    )
    sub = new_subscription(req, AddressPolicy(allow_private=False))
    for name in NAMES:
        assert getattr(sub, name) == getattr(req, name), name


def test_new_subscription_normalizes_method_and_event_types() -> None:
    req = msgspec.convert(
        {"tenant_id": "t", "name": "n", "url": "https://crm.example.com/h",
         "event_types": ["b.c", "a.*", "b.c"], "method": "patch"},
        SubscriptionCreate,
    )  # fmt: skip
    sub = new_subscription(req, AddressPolicy(allow_private=False))
    assert (sub.method, sub.event_types) == ("PATCH", ("b.c", "a.*"))


@pytest.mark.parametrize("component", ["SubscriptionCreate", "SubscriptionPatch"])
def test_the_openapi_request_schemas_have_every_writable_field(component: str) -> None:
    schema = COMPONENTS[component]
    assert set(NAMES) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_openapi_required_fields_follow_the_declaration() -> None:
    required = {f.name for f in msgspec.structs.fields(SubscriptionCreate) if f.required}
    assert set(COMPONENTS["SubscriptionCreate"]["required"]) == required
    assert "required" not in COMPONENTS["SubscriptionPatch"]


def test_the_openapi_view_shows_every_stored_field_but_the_secrets() -> None:
    view = COMPONENTS["Subscription"]
    stored = set(Subscription.__struct_fields__)
    assert stored - set(HIDDEN_FIELDS) <= set(view["required"])
    assert not set(HIDDEN_FIELDS) & set(view["required"])
    assert "previous_secret" not in view["properties"]


def test_openapi_constraints_come_from_the_declaration() -> None:
    props = COMPONENTS["SubscriptionPatch"]["properties"]
    info = msgspec.inspect.type_info(SubscriptionSettings)
    assert isinstance(info, msgspec.inspect.StructType)
    checked = 0
    for field in info.fields:
        if isinstance(field.type, msgspec.inspect.IntType | msgspec.inspect.FloatType):
            bounds = {"minimum": field.type.ge, "maximum": field.type.le}
            for keyword, bound in bounds.items():
                if bound is not None:
                    assert props[field.name][keyword] == bound, field.name
                    checked += 1
    assert checked  # max_in_flight at least


class _Wider(SubscriptionSettings, frozen=True, kw_only=True):
    """The declaration with one more field, as a future change would add it."""

    colour: Annotated[
        Annotated[str, msgspec.Meta(max_length=9)] | None, msgspec.Meta(description="A new one")
    ] = None


class _WiderCreate(_Wider, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: str


class _WiderStored(_Wider, frozen=True, kw_only=True):
    id: str
    secret: str
    previous_secret: str | None = None


def test_a_field_added_to_the_declaration_appears_everywhere() -> None:
    patch = patch_of(_Wider, "WiderPatch")
    assert "colour" in patch.__struct_fields__
    decoded = msgspec.json.decode(b'{"colour": null}', type=patch)
    assert msgspec.structs.asdict(decoded)["colour"] is None
    generated = schemas(_WiderCreate, patch, _WiderStored)
    for component in ("SubscriptionCreate", "SubscriptionPatch", "Subscription"):
        colour = generated[component]["properties"]["colour"]
        assert colour["maxLength"] == 9, component
        assert colour["nullable"] is True, component
        assert colour["description"] == "A new one", component
    assert "colour" in generated["Subscription"]["required"]
    assert not {"_WiderCreate", "WiderPatch", "_WiderStored"} & set(generated)
