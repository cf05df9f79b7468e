"""Subscription validation: everything that cannot work is refused when saved."""

from __future__ import annotations

import ipaddress
from typing import Any, Final

import msgspec
import pytest

from service.admin.requests import split_validation_error
from service.delivery.netguard import AddressPolicy
from service.subscriptions.auth import MASK, Auth
from service.subscriptions.model import (
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
        ({"method": "TRACE"}, "method"),
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
    # Bounds declared on the fields are refused while decoding (a 422 naming the field, as
    # the API answers it); the rest by validate().
    with pytest.raises((InvalidSubscription, msgspec.ValidationError)) as info:
        create(**overrides)
    if isinstance(info.value, InvalidSubscription):
        assert info.value.field == field
    else:
        assert isinstance(info.value, msgspec.ValidationError)
        assert split_validation_error(info.value)[1] == field


def test_private_targets_allowed_when_configured() -> None:
    req = msgspec.convert(
        {"tenant_id": "t", "name": "n", "url": "http://127.0.0.1:9/x", "event_types": ["*"]},
        SubscriptionCreate,
    )
    assert new_subscription(req, AddressPolicy(allow_private=True, allow_http=True)).url.endswith(
        "/x"
    )


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


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/hook",  # 127.0.0.1 as one decimal number
        "https://0x7f000001/hook",  # ...as hex
        "https://0177.0.0.1/hook",  # ...with an octal part
        "https://127.1/hook",  # ...with parts left out
        "https://0x7f.0.0.1./hook",  # ...hex part and a trailing dot
    ],
)
def test_ambiguous_ipv4_spellings_are_refused(url: str) -> None:
    for policy in (STRICT, AddressPolicy(allow_private=True)):
        req = msgspec.convert(
            {"tenant_id": "t", "name": "n", "url": url, "event_types": ["*"]}, SubscriptionCreate
        )
        with pytest.raises(InvalidSubscription) as info:
            new_subscription(req, policy)
        assert info.value.field == "url"


def test_a_literal_with_a_trailing_dot_is_still_judged() -> None:
    with pytest.raises(InvalidSubscription, match="blocked"):
        create(url="https://169.254.169.254./latest")


@pytest.mark.parametrize(
    "url", ["https://123.example.com/", "https://cafe.be/", "https://1password.com/x"]
)
def test_names_that_look_numeric_in_part_are_fine(url: str) -> None:
    assert create(url=url).url == url


def test_plain_http_needs_allow_http() -> None:
    with pytest.raises(InvalidSubscription, match="https"):
        create(url="http://crm.example.com/hooks")
    req = msgspec.convert(
        {"tenant_id": "t", "name": "n", "url": "http://crm.example.com/", "event_types": ["*"]},
        SubscriptionCreate,
    )
    assert new_subscription(req, AddressPolicy(allow_private=False, allow_http=True))


def test_a_loopback_name_is_refused_when_saved_not_at_delivery() -> None:
    with pytest.raises(InvalidSubscription, match="loopback name") as info:
        create(url="https://localhost/hooks")
    assert info.value.field == "url"


def test_allowed_networks_pass_the_private_table() -> None:
    policy = AddressPolicy(allow_private=False, allowed=[ipaddress.ip_network("10.20.0.0/16")])
    fields = {"tenant_id": "t", "name": "n", "event_types": ["*"]}
    ok = msgspec.convert({**fields, "url": "https://10.20.1.1/x"}, SubscriptionCreate)
    assert new_subscription(ok, policy)
    refused = msgspec.convert({**fields, "url": "https://10.21.1.1/x"}, SubscriptionCreate)
    with pytest.raises(InvalidSubscription):
        new_subscription(refused, policy)


SECRET_AUTHS: Final = {
    "password": {"type": "basic", "username": "crmuser", "password": "s3cret-pass"},
    "key": {"type": "api_key", "header": "X-Api-Key", "key": "s3cret-key"},
    "token": {"type": "bearer", "token": "s3cret-token"},
    "client_secret": {
        "type": "oauth2_client_credentials",
        "token_url": "https://auth.example.com/token",
        "client_id": "switchboard",
        "client_secret": "s3cret-client",
    },
}


@pytest.mark.parametrize("field", sorted(SECRET_AUTHS))
def test_the_mask_sent_back_keeps_the_saved_secret(field: str) -> None:
    auth = SECRET_AUTHS[field]
    sub = create(auth=auth)
    # What a settings page sends back after reading the subscription: the masked view.
    read_back = msgspec.convert(sub.public()["auth"], Auth)
    assert getattr(read_back, field) == MASK
    patched = apply_patch(sub, SubscriptionPatch(name="Renamed", auth=read_back), STRICT)
    assert getattr(patched.auth, field) == auth[field]
    # A real new secret still replaces it.
    changed = msgspec.convert({**auth, field: "new-secret"}, Auth)
    assert getattr(apply_patch(sub, SubscriptionPatch(auth=changed), STRICT).auth, field) == (
        "new-secret"
    )


@pytest.mark.parametrize("field", sorted(SECRET_AUTHS))
def test_the_mask_is_refused_where_no_secret_is_saved(field: str) -> None:
    masked_auth = {**SECRET_AUTHS[field], field: MASK}
    with pytest.raises(InvalidSubscription, match="mask") as created:
        create(auth=masked_auth)
    assert created.value.field == "auth"
    with pytest.raises(InvalidSubscription, match="mask"):
        apply_patch(create(), SubscriptionPatch(auth=msgspec.convert(masked_auth, Auth)), STRICT)


def test_null_clears_headers_and_filters() -> None:
    sub = create(
        headers={"X-Caller": "1"}, filters=[{"path": "data.x", "op": "exists", "value": True}]
    )
    patch = msgspec.json.decode(b'{"headers": null, "filters": null}', type=SubscriptionPatch)
    cleared = apply_patch(sub, patch, STRICT)
    assert (cleared.headers, cleared.filters) == ({}, ())
