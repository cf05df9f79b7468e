"""The admin API: auth on every /v1 route, validation errors, CRUD, read-your-writes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from service.subscriptions.auth import BasicAuth
from tests.conftest import RunningService

ROUTES = [
    ("POST", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/sub_000000000000000000000000"),
    ("PATCH", "/v1/subscriptions/sub_000000000000000000000000"),
    ("DELETE", "/v1/subscriptions/sub_000000000000000000000000"),
    ("POST", "/v1/subscriptions/sub_000000000000000000000000/rotate-secret"),
]

VALID = {
    "tenant_id": "acme",
    "name": "CRM",
    "url": "http://127.0.0.1:9/hooks",
    "event_types": ["call.ended", "call.summary_ready"],
}


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-wrong-token", "Basic abc", "Bearer "])
async def test_every_v1_route_requires_the_token(service: RunningService, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    async with aiohttp.ClientSession() as anon:
        for method, path in ROUTES:
            async with anon.request(method, service.base + path, headers=headers, json={}) as r:
                assert r.status == 401, (method, path)
                body = await r.json()
                assert body["error"]["code"] == "unauthorized"


async def test_probes_and_metrics_need_no_token(service: RunningService) -> None:
    async with aiohttp.ClientSession() as anon:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with anon.get(service.base + path) as r:
                assert r.status == 200, path


async def test_crud(service: RunningService) -> None:
    http, base = service.http, service.base
    created = await service.create_subscription(
        **VALID, headers={"X-Team": "sales"}, rate_limit={"per_second": 5, "burst": 10}
    )
    sub_id = created["id"]
    assert created["secret"].startswith("whsec_")
    assert created["method"] == "POST"
    assert created["timeout_seconds"] == 10
    assert created["rate_limit"] == {"per_second": 5, "burst": 10}
    # Read-your-writes: the same replica answers with what was just written.
    async with http.get(f"{base}/v1/subscriptions/{sub_id}") as r:
        assert r.status == 200
        got = await r.json()
    assert "secret" not in got
    assert {k: v for k, v in created.items() if k not in ("secret", "warnings")} == got
    async with http.patch(
        f"{base}/v1/subscriptions/{sub_id}", json={"enabled": False, "name": "Renamed"}
    ) as r:
        assert r.status == 200
        patched = await r.json()
    assert (patched["enabled"], patched["name"], patched["url"]) == (False, "Renamed", VALID["url"])
    assert "secret" not in patched
    async with http.get(f"{base}/v1/subscriptions/{sub_id}") as r:
        assert (await r.json())["enabled"] is False
    async with http.delete(f"{base}/v1/subscriptions/{sub_id}") as r:
        assert r.status == 204
    for method in ("GET", "PATCH", "DELETE"):
        async with http.request(method, f"{base}/v1/subscriptions/{sub_id}", json={}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def test_list_by_tenant_paginated(service: RunningService) -> None:
    ids = set()
    for i in range(5):
        ids.add((await service.create_subscription(**{**VALID, "name": f"n{i}"}))["id"])
    await service.create_subscription(**{**VALID, "tenant_id": "other"})
    seen: list[str] = []
    after = ""
    while True:
        url = f"{service.base}/v1/subscriptions?tenant_id=acme&limit=2&after={after}"
        async with service.http.get(url) as r:
            page = await r.json()
        seen.extend(s["id"] for s in page["data"])
        assert all("secret" not in s for s in page["data"])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert set(seen) == ids
    assert len(seen) == 5


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"[]", 422, None),
        ({**VALID, "url": "ftp://x"}, 422, "url"),
        ({**VALID, "event_types": []}, 422, "event_types"),
        ({**VALID, "event_types": "call.ended"}, 422, "event_types"),
        ({**VALID, "headers": {"Host": "x"}}, 422, "headers"),
        ({**VALID, "headers": {"X-A": "a\nb"}}, 422, "headers"),
        ({**VALID, "timeout_seconds": -1}, 422, "timeout_seconds"),
        ({**VALID, "unknown": 1}, 422, "unknown"),
        ({k: v for k, v in VALID.items() if k != "url"}, 422, "url"),
        ({**VALID, "rate_limit": {"per_second": "fast"}}, 422, "rate_limit.per_second"),
        ({**VALID, "secret": "whsec_mine"}, 422, "secret"),
    ],
)
async def test_invalid_input_is_a_clear_error(
    service: RunningService, body: Any, status: int, field: str | None
) -> None:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with service.http.post(f"{service.base}/v1/subscriptions", **kwargs) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert error["message"]
    if field is not None:
        assert error["field"] == field


async def test_patch_validation_and_oversized_body(service: RunningService) -> None:
    sub = await service.create_subscription(**VALID)
    url = f"{service.base}/v1/subscriptions/{sub['id']}"
    async with service.http.patch(url, json={"method": "TRACE"}) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "method"
    async with service.http.patch(url, json={"id": "sub_other"}) as r:
        assert r.status == 422
    async with service.http.post(
        f"{service.base}/v1/subscriptions", data=b"{" + b" " * 100_000 + b"}"
    ) as r:
        assert r.status == 413
    async with service.http.get(f"{service.base}/v1/nothing-here") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({**VALID, "url": "not a url"}, "url", "whitespace"),
        ({**VALID, "url": "example.com/hook"}, "url", "scheme must be https or http"),
        (b"", None, "the body is empty"),
        (
            {**VALID, "auth": {"type": "basic_auth", "username": "u", "password": "p"}},
            "auth.type",
            "api_key, basic, bearer, oauth2_client_credentials",
        ),
    ],
)
async def test_errors_name_the_problem_and_the_accepted_values(
    service: RunningService, body: Any, field: str | None, says: str
) -> None:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with service.http.post(f"{service.base}/v1/subscriptions", **kwargs) as r:
        assert r.status in (400, 422)
        error = (await r.json())["error"]
    assert says in error["message"]
    assert error["field"] == field


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("id", "id cannot be changed"),
        ("tenant_id", "tenant_id cannot be changed"),
        ("secret", "rotate-secret"),
    ],
)
async def test_patching_a_fixed_field_says_it_cannot_change(
    service: RunningService, field: str, says: str
) -> None:
    sub = await service.create_subscription(**VALID)
    url = f"{service.base}/v1/subscriptions/{sub['id']}"
    async with service.http.patch(url, json={field: "x"}) as r:
        assert r.status == 422
        error = (await r.json())["error"]
    assert says in error["message"]
    assert error["field"] == field


async def test_null_clears_headers_and_filters_over_the_api(service: RunningService) -> None:
    sub = await service.create_subscription(
        **VALID,
        headers={"X-Team": "sales"},
        filters=[{"path": "data.agent.id", "op": "exists", "value": True}],
    )
    url = f"{service.base}/v1/subscriptions/{sub['id']}"
    async with service.http.patch(url, json={"headers": None, "filters": None}) as r:
        assert r.status == 200, await r.text()
        got = await r.json()
    assert (got["headers"], got["filters"]) == ({}, [])


async def test_an_oversized_body_states_the_limit(service: RunningService) -> None:
    async with service.http.post(
        f"{service.base}/v1/subscriptions", data=b"{" + b" " * 100_000 + b"}"
    ) as r:
        assert r.status == 413
        assert "65536 bytes" in (await r.json())["error"]["message"]


async def test_a_masked_secret_sent_back_keeps_the_saved_one(
    service: RunningService, receiver: Any
) -> None:
    """The settings-page round trip: GET, change the name, PATCH back what was read."""
    sub = await service.create_subscription(
        **{**VALID, "url": receiver.url()},
        auth={"type": "basic", "username": "crmuser", "password": "real-password"},
    )
    url = f"{service.base}/v1/subscriptions/{sub['id']}"
    async with service.http.get(url) as r:
        read = await r.json()
    assert read["auth"]["password"] == "********"
    async with service.http.patch(url, json={"name": "Renamed", "auth": read["auth"]}) as r:
        assert r.status == 200, await r.text()
    stored = service.app.table.get(sub["id"])
    assert stored is not None
    assert isinstance(stored.auth, BasicAuth)
    assert stored.auth.password == "real-password"


async def test_settings_the_catalog_does_not_know_are_warned_about_or_refused(
    service: RunningService,
) -> None:
    created = await service.create_subscription(
        **{**VALID, "event_types": ["call.endd"]},
        body_template={"phone": "{{data.contact.phone_number}}"},
    )
    assert created["warnings"] == [
        "event_types: 'call.endd' matches no type in the event catalog (did you mean 'call.ended'?)"
    ]
    url = f"{service.base}/v1/subscriptions/{created['id']}"
    async with service.http.patch(url, json={"event_types": ["call.ended"]}) as r:
        [warning] = (await r.json())["warnings"]
    assert warning.startswith("body_template.phone: data.contact.phone_number is in no")
    for body, field in [
        ({**VALID, "event_types": ["call.endd"], "strict_schema": True}, "strict_schema"),
        (
            {**VALID, "filters": [{"path": "data.call.duration", "op": "gt", "value": "30"}]},
            "filters",
        ),
    ]:
        async with service.http.post(f"{service.base}/v1/subscriptions", json=body) as r:
            assert r.status == 422
            assert (await r.json())["error"]["field"] == field
