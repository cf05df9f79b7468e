"""A subscription held against the catalog: warnings for what matches nothing, refusals for
what can never work."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from service.delivery.netguard import AddressPolicy
from service.subscriptions.checks import catalog_check
from service.subscriptions.model import (
    InvalidSubscription,
    Subscription,
    SubscriptionCreate,
    new_subscription,
)


def sub(**overrides: Any) -> Subscription:
    fields: dict[str, Any] = {
        "tenant_id": "acme",
        "name": "CRM",
        "url": "https://crm.example.com/hooks",
        "event_types": ["call.ended"],
    }
    fields.update(overrides)
    return new_subscription(
        msgspec.convert(fields, SubscriptionCreate), AddressPolicy(allow_private=False)
    )


def test_catalogued_settings_have_no_warnings() -> None:
    checked = sub(
        event_types=["call.ended", "contact.*", "*"],
        body_template={"phone": "{{data.contact.phoneNumber}}", "kind": "{{type}}"},
        filters=[{"path": "data.call.duration", "op": "gt", "value": 30}],
        strict_schema=True,
    )
    assert catalog_check(checked) == []


@pytest.mark.parametrize(
    ("pattern", "suggestion"),
    [("call.endd", "call.ended"), ("call_ended", "call.ended"), ("call", "call.*")],
)
def test_an_unknown_type_is_accepted_with_a_warning(pattern: str, suggestion: str) -> None:
    [warning] = catalog_check(sub(event_types=[pattern]))
    assert warning.startswith(f"event_types: {pattern!r} matches no type in the event catalog")
    assert f"did you mean {suggestion!r}" in warning


def test_strict_schema_with_an_uncatalogued_type_is_refused() -> None:
    with pytest.raises(InvalidSubscription, match="every such event would become a dead letter"):
        catalog_check(sub(event_types=["call.endd"], strict_schema=True))


def test_a_template_path_no_catalogued_type_has_is_warned_about() -> None:
    [warning] = catalog_check(sub(body_template={"phone": "{{data.contact.phone_number}}"}))
    assert warning.startswith("body_template.phone: data.contact.phone_number is in no")
    assert "did you mean 'data.contact.phoneNumber'" in warning
    [header] = catalog_check(sub(headers={"X-Id": "{{data.nothing}}"}))
    assert header.startswith("headers.X-Id: data.nothing")


def test_a_filter_value_of_the_wrong_type_is_refused() -> None:
    string = [{"path": "data.call.duration", "op": "gt", "value": "30"}]
    with pytest.raises(InvalidSubscription, match="'30' is string") as refused:
        catalog_check(sub(filters=string))
    assert refused.value.field == "filters"
    assert "integer" in refused.value.message
    with pytest.raises(InvalidSubscription, match="is string"):
        catalog_check(
            sub(filters=[{"path": "data.call.duration", "op": "in", "value": [30, "60"]}])
        )
    # With an uncatalogued type besides, the field may have that type there: a warning.
    [warning] = [
        w
        for w in catalog_check(sub(event_types=["call.ended", "x.y"], filters=string))
        if w.startswith("filters")
    ]
    assert "'30' is string" in warning


@pytest.mark.parametrize(
    "condition",
    [
        {"path": "data.call.duration", "op": "gt", "value": 30.0},
        {"path": "data.call.direction", "op": "in", "value": ["inbound"]},
        {"path": "data.call.duration", "op": "exists", "value": True},
        {"path": "data.agent.id", "op": "contains", "value": "agent"},
        {"path": "data.call.status", "op": "eq", "value": None},
    ],
)
def test_filters_whose_values_fit_pass(condition: dict[str, Any]) -> None:
    assert catalog_check(sub(filters=[condition])) == []
