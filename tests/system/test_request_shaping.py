"""Methods, body templates, field lists, header templates and endpoint auth, end to end."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from service.catalog.entries import BY_TYPE
from service.delivery.signing import secret_key, sign
from tests.conftest import RunningService, wait_until
from tests.helpers.kafka import read_all
from tests.helpers.webhooks import Recorder, Seen, json_answer, send_event


def verify_query_signature(seen: Seen, secret: str) -> None:
    """GET and DELETE sign the query string as sent, in place of a body."""
    msg_id, stamp = seen.headers["webhook-id"], int(seen.headers["webhook-timestamp"])
    expected = sign(secret_key(secret), msg_id, stamp, seen.raw_query.encode())
    assert expected in seen.headers["webhook-signature"].split(" ")


async def test_methods_templates_and_field_lists_shape_each_request(
    service: RunningService, http_server: Any, producer: AIOKafkaProducer
) -> None:
    recorder = Recorder()
    base = await http_server(recorder.app())
    make = service.create_subscription
    templated = await make(
        tenant_id="acme", name="crm", url=base + "/template", event_types=["call.summary_ready"],
        body_template={
            "phone": "{{data.contact.phoneNumber}}",
            "duration": "{{data.call.duration}}",
            "contact": "{{data.contact}}",
            "kind": "{{type}}",
            "account": "{{tenant_id}}",
            "note": "Call from {{data.contact.firstName}} ({{data.call.duration}} s)",
            "missing": "{{data.nothing.here}}",
            "fixed": [1, True, None],
        },
        headers={"X-Caller": "{{data.contact.phoneNumber}}", "X-Static": "yes"},
    )  # fmt: skip
    fields = await make(
        tenant_id="acme", name="sheet", url=base + "/fields", method="PUT",
        event_types=["call.summary_ready"],
        body_fields=["id", "data.contact.phoneNumber", "data.summary", "data.absent"],
    )  # fmt: skip
    getter = await make(
        tenant_id="acme", name="zap", url=base + "/get?source=sb", method="GET",
        event_types=["call.summary_ready"],
        body_template={"phone": "{{data.contact.phoneNumber}}", "secs": "{{data.call.duration}}",
                       "agent": "{{data.agent}}"},
    )  # fmt: skip
    deleter = await make(
        tenant_id="acme", name="cleanup", url=base + "/delete", method="DELETE",
        event_types=["call.summary_ready"],
    )  # fmt: skip
    data = BY_TYPE["call.summary_ready"].sample
    event_id = await send_event(producer, service.topic, "call.summary_ready", data)
    assert await wait_until(lambda: len(recorder.seen) == 4, within=20)

    [post] = recorder.at("/template")
    assert post.method == "POST"
    assert post.json() == {
        "phone": "+14155550123",
        "duration": 125,
        "contact": data["contact"],
        "kind": "call.summary_ready",
        "account": "acme",
        "note": "Call from Jane (125 s)",
        "missing": None,
        "fixed": [1, True, None],
    }
    assert post.headers["X-Caller"] == "+14155550123"
    assert post.headers["X-Static"] == "yes"
    # The signature covers the templated body, as sent.
    Webhook(templated["secret"]).verify(post.body, post.headers)

    [put] = recorder.at("/fields")
    assert put.method == "PUT"
    assert put.json() == {
        "id": event_id,
        "data": {"contact": {"phoneNumber": "+14155550123"}, "summary": data["summary"]},
    }
    Webhook(fields["secret"]).verify(put.body, put.headers)

    [get] = recorder.at("/get")
    assert get.method == "GET"
    assert get.body == b""
    assert get.query == {"source": "sb", "phone": "+14155550123", "secs": "125",
                         "agent": orjson.dumps(data["agent"]).decode()}  # fmt: skip
    verify_query_signature(get, getter["secret"])

    [delete] = recorder.at("/delete")
    assert delete.method == "DELETE"
    assert delete.query["id"] == event_id
    assert delete.query["type"] == "call.summary_ready"
    assert orjson.loads(delete.query["data"]) == data
    verify_query_signature(delete, deleter["secret"])


async def test_static_auth_kinds_send_their_headers_and_keep_secrets_sealed(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(secrets_key=Fernet.generate_key().decode())
    recorder = Recorder()
    base = await http_server(recorder.app())
    kinds = {
        "/key": {"type": "api_key", "header": "X-Api-Key", "key": "key-0f9e8d7c6b5a"},
        "/basic": {"type": "basic", "username": "switchboard", "password": "pw-1a2b3c4d5e"},
        "/bearer": {"type": "bearer", "token": "tok-6f7e8d9c0b1a"},
    }
    subs = {}
    for path, auth in kinds.items():
        subs[path] = await svc.create_subscription(
            tenant_id="acme", name=path, url=base + path, event_types=["contact.created"],
            auth=auth,
        )  # fmt: skip
        assert subs[path]["auth"]["type"] == auth["type"]
    await send_event(producer, svc.topic, "contact.created", BY_TYPE["contact.created"].sample)
    assert await wait_until(lambda: len(recorder.seen) == 3, within=20)
    assert recorder.at("/key")[0].headers["X-Api-Key"] == "key-0f9e8d7c6b5a"
    basic = base64.b64encode(b"switchboard:pw-1a2b3c4d5e").decode()
    assert recorder.at("/basic")[0].headers["Authorization"] == f"Basic {basic}"
    assert recorder.at("/bearer")[0].headers["Authorization"] == "Bearer tok-6f7e8d9c0b1a"
    secrets = ["key-0f9e8d7c6b5a", "pw-1a2b3c4d5e", "tok-6f7e8d9c0b1a"]
    # Never in an API answer...
    async with svc.http.get(f"{svc.base}/v1/subscriptions") as resp:
        listing = await resp.text()
    assert "********" in listing
    assert not any(s in listing for s in secrets)
    # ...nor in the subscriptions topic, where they are sealed like signing secrets.
    records = await read_all(svc.settings.kafka_bootstrap_servers,
                             svc.settings.subscriptions_topic, 3)  # fmt: skip
    stored = b"".join(r.value or b"" for r in records)
    assert b"sealed:v1:" in stored
    assert not any(s.encode() in stored for s in secrets)
    # A PATCH replaces the auth; removing it stops sending the header.
    url = f"{svc.base}/v1/subscriptions/{subs['/bearer']['id']}"
    async with svc.http.patch(url, json={"auth": None}) as resp:
        assert resp.status == 200
        assert (await resp.json())["auth"] is None
    await send_event(producer, svc.topic, "contact.created", BY_TYPE["contact.created"].sample)
    assert await wait_until(lambda: len(recorder.at("/bearer")) == 2, within=20)
    assert "Authorization" not in recorder.at("/bearer")[1].headers


async def test_oauth2_token_is_fetched_once_cached_and_fetched_again_after_a_401(
    service: RunningService, http_server: Any, producer: AIOKafkaProducer
) -> None:
    issued = itertools.count(1)
    current = {"token": ""}
    fetches: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        fetches.append({**form, "authorization": request.headers.get("Authorization", "")})
        current["token"] = f"tok-{next(issued)}"
        return json_answer({"access_token": current["token"], "token_type": "Bearer",
                            "expires_in": 3600})  # fmt: skip

    def answer(seen: Any) -> web.Response:
        ok = seen.headers.get("Authorization") == f"Bearer {current['token']}"
        return web.Response(status=204 if ok else 401)

    recorder = Recorder(answer)
    app = recorder.app()
    token_app = web.Application()
    token_app.router.add_post("/oauth/token", token)
    base = await http_server(app)
    token_base = await http_server(token_app)
    await service.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["call.ended"],
        auth={"type": "oauth2_client_credentials", "token_url": token_base + "/oauth/token",
              "client_id": "switchboard", "client_secret": "cs-9a8b7c6d", "scope": "webhooks"},
    )  # fmt: skip
    sample = BY_TYPE["call.ended"].sample
    for _ in range(10):
        await send_event(producer, service.topic, "call.ended", sample)
    ok = await wait_until(lambda: sum(s.headers.get("Authorization") == "Bearer tok-1"
                                        for s in recorder.seen) == 10, within=20)  # fmt: skip
    assert ok, ([s.headers.get("Authorization") for s in recorder.seen], fetches)
    assert len(fetches) == 1  # ten deliveries (some concurrent), one token
    basic = base64.b64encode(b"switchboard:cs-9a8b7c6d").decode()
    assert fetches[0] == {"grant_type": "client_credentials", "scope": "webhooks",
                          "authorization": f"Basic {basic}"}  # fmt: skip
    # The token server rotates: the old token is refused with 401, the retry fetches anew.
    current["token"] = "revoked"
    await send_event(producer, service.topic, "call.ended", sample)
    assert await wait_until(lambda: any(s.headers.get("Authorization") == "Bearer tok-2"
                                        for s in recorder.seen), within=20)  # fmt: skip
    assert [s.headers["Authorization"] for s in recorder.seen[10:]] == [
        "Bearer tok-1", "Bearer tok-2"
    ]  # fmt: skip
    assert len(fetches) == 2
