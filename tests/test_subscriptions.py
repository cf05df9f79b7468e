"""Subscription validation: everything that cannot work is refused when saved."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from service.netguard import AddressPolicy
from service.subscriptions import (
    InvalidSubscription,
    SubscriptionCreate,
    SubscriptionPatch,
    apply_patch,
    new_subscription,
)

STRICT = AddressPolicy(allow_private=False)


def create(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "tenant_id": "acme",
        "name": "CRM",
        "url": "https://crm.example.com/hooks",
        "event_types": ["call.ended", "call.*"],
    }
    fields.update(overrides)
    req = msgspec.convert(fields, SubscriptionCreate)
    return new_subscription(req, STRICT)


def test_defaults_and_generated_fields() -> None:
    sub = create()
    assert sub.id.startswith("sub_")
    assert sub.secret.startswith("whsec_")
    assert sub.method == "POST"
    assert sub.timeout_seconds == 10
    assert sub.enabled
    assert sub.created_at == sub.updated_at
    assert "secret" not in sub.public()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tenant_id": ""}, "tenant_id"),
        ({"name": ""}, "name"),
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https:///path"}, "url"),
        ({"url": "https://example.com/a b"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": "https://127.0.0.1/hook"}, "url"),
        ({"url": "https://[::1]/hook"}, "url"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "url"),
        ({"method": "GET"}, "method"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["Call.Ended"]}, "event_types"),
        ({"event_types": ["call*"]}, "event_types"),
        ({"event_types": ["*.ended"]}, "event_types"),
        ({"headers": {"Host": "evil"}}, "headers"),
        ({"headers": {"webhook-signature": "x"}}, "headers"),
        ({"headers": {"X-Ok": "a\r\nInjected: 1"}}, "headers"),
        ({"headers": {"bad name": "x"}}, "headers"),
        ({"rate_limit": {"per_second": 0}}, "rate_limit.per_second"),
        ({"rate_limit": {"per_second": 5, "burst": 0}}, "rate_limit.burst"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 600}, "timeout_seconds"),
    ],
)
def test_invalid_fields_are_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSubscription) as info:
        create(**overrides)
    assert info.value.field == field


def test_private_targets_allowed_when_configured() -> None:
    req = msgspec.convert(
        {"tenant_id": "t", "name": "n", "url": "http://127.0.0.1:9/x", "event_types": ["*"]},
        SubscriptionCreate,
    )
    assert new_subscription(req, AddressPolicy(allow_private=True)).url.endswith("/x")


def test_patch_changes_only_given_fields_and_revalidates() -> None:
    sub = create()
    patched = apply_patch(sub, SubscriptionPatch(name="Renamed", enabled=False), STRICT)
    assert (patched.name, patched.enabled, patched.url) == ("Renamed", False, sub.url)
    assert patched.secret == sub.secret
    assert patched.id == sub.id
    with pytest.raises(InvalidSubscription):
        apply_patch(sub, SubscriptionPatch(url="http://10.0.0.1/"), STRICT)
    cleared = apply_patch(
        create(rate_limit={"per_second": 2}), SubscriptionPatch(rate_limit=None), STRICT
    )
    assert cleared.rate_limit is None


def test_duplicate_event_types_are_folded() -> None:
    assert create(event_types=["call.ended", "call.ended"]).event_types == ("call.ended",)
