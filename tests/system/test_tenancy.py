"""Tenant API keys see and change their own tenant only; secrets are sealed at rest."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson
from aiokafka import AIOKafkaProducer
from cryptography.fernet import Fernet

from service.app import Switchboard
from service.observability import metrics
from tests.conftest import (
    ReceiverServer,
    RunningService,
    produce_events,
    service_env,
    wait_until,
)
from tests.helpers.kafka import read_all

ROOT = Path(__file__).resolve().parents[2]
SUB = {"name": "crm", "url": "http://127.0.0.1:9/hook", "event_types": ["*"]}


async def new_key(service: RunningService, tenant: str) -> str:
    async with service.http.post(f"{service.base}/v1/api-keys", json={"tenant_id": tenant}) as r:
        assert r.status == 201
        body = await r.json()
    assert body["key"].startswith("sbk_")
    assert "key_hash" not in body
    key: str = body["key"]
    return key


async def test_a_tenant_key_reaches_only_its_own_tenant(service: RunningService) -> None:
    key_a = await new_key(service, "tenant-a")
    sub_b = await service.create_subscription(tenant_id="tenant-b", **SUB)
    base = service.base
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key_a}"}) as a:
        async with a.post(f"{base}/v1/subscriptions", json={"tenant_id": "tenant-a", **SUB}) as r:
            assert r.status == 201
            sub_a = await r.json()
        async with a.post(f"{base}/v1/subscriptions", json={"tenant_id": "tenant-b", **SUB}) as r:
            assert r.status == 404
        async with a.get(f"{base}/v1/subscriptions") as r:
            assert [s["id"] for s in (await r.json())["data"]] == [sub_a["id"]]
        async with a.get(f"{base}/v1/subscriptions?tenant_id=tenant-b") as r:
            assert (await r.json())["data"] == []
        async with a.get(f"{base}/v1/subscriptions/{sub_a['id']}") as r:
            assert r.status == 200
        other = f"{base}/v1/subscriptions/{sub_b['id']}"
        for method, url, body in [
            ("GET", other, None),
            ("PATCH", other, {"name": "taken"}),
            ("POST", other + "/rotate-secret", {}),
            ("DELETE", other, None),
            ("GET", f"{base}/v1/api-keys", None),
            ("POST", f"{base}/v1/api-keys", {"tenant_id": "tenant-a"}),
        ]:
            async with a.request(method, url, json=body) as r:
                assert r.status == 404, (method, url)
                text = await r.text()
                assert "tenant-b" not in text
                assert sub_b["id"] not in text or method != "GET"
    assert service.app.table.get(sub_b["id"]) is not None  # untouched
    assert service.app.table.get(sub_b["id"]).name == "crm"  # type: ignore[union-attr]


async def test_deleted_and_unknown_keys_are_refused(service: RunningService) -> None:
    key = await new_key(service, "tenant-a")
    async with service.http.get(f"{service.base}/v1/api-keys?tenant_id=tenant-a") as r:
        [listed] = (await r.json())["data"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as a:
        async with a.get(f"{service.base}/v1/subscriptions") as r:
            assert r.status == 200
        async with service.http.delete(f"{service.base}/v1/api-keys/{listed['id']}") as r:
            assert r.status == 204
        async with a.get(f"{service.base}/v1/subscriptions") as r:
            assert r.status == 401
    guess = {"Authorization": "Bearer sbk_guess"}
    async with (
        aiohttp.ClientSession(headers=guess) as g,
        g.get(f"{service.base}/v1/subscriptions") as r,
    ):
        assert r.status == 401


async def test_secrets_are_sealed_at_rest_and_keys_rotate(
    service_factory: Any, receiver: ReceiverServer, producer: AIOKafkaProducer
) -> None:
    old_key, new_key_ = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    svc: RunningService = await service_factory(secrets_key=old_key)
    created = await svc.create_subscription(
        tenant_id="acme", name="s", url=receiver.url("s"), event_types=["*"]
    )
    receiver.receiver.secrets["s"] = created["secret"]
    bootstrap, topic = svc.settings.kafka_bootstrap_servers, svc.settings.subscriptions_topic
    [record] = await read_all(bootstrap, topic, 1)
    stored = orjson.loads(record.value)
    assert stored["secret"].startswith("sealed:v1:")
    assert created["secret"] not in record.value.decode()
    # Deliveries sign with the opened secret.
    await produce_events(producer, svc.topic, types=["call.ended"])
    assert await wait_until(lambda: len(receiver.receiver.received) == 1, within=20)
    assert receiver.receiver.received[0].verified
    # Rotation of the key: a replica holding new,old opens the record and reseals it.
    rotating = Switchboard(
        msgspec.structs.replace(svc.settings, http_port=0, secrets_key=(new_key_, old_key))
    )
    task = asyncio.create_task(rotating.run())
    try:
        assert await wait_until(rotating.table.loaded.is_set, within=20)
        assert rotating.table.get(created["id"]).secret == created["secret"]  # type: ignore[union-attr]
        assert await rotating.table.reseal_all() == 1
    finally:
        rotating.request_stop()
        await asyncio.wait_for(task, 30)
    # A replica with only the new key reads it; one without any key skips it, counted.
    skipped = metrics.SUBSCRIPTION_RECORDS_INVALID._value.get()
    for keys, readable in (((new_key_,), True), ((), False)):
        replica = Switchboard(msgspec.structs.replace(svc.settings, http_port=0, secrets_key=keys))
        task = asyncio.create_task(replica.run())
        try:
            assert await wait_until(replica.table.loaded.is_set, within=20)
            sub = replica.table.get(created["id"])
            assert (sub is not None) == readable
            if readable:
                assert sub is not None
                assert sub.secret == created["secret"]
        finally:
            replica.request_stop()
            await asyncio.wait_for(task, 30)
    assert metrics.SUBSCRIPTION_RECORDS_INVALID._value.get() > skipped


async def test_reseal_secrets_command_completes_a_key_rotation(
    service_factory: Any, receiver: ReceiverServer
) -> None:
    old_key, new_key_ = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    svc: RunningService = await service_factory(secrets_key=old_key)
    created = await svc.create_subscription(
        tenant_id="acme", name="s", url=receiver.url("s"), event_types=["*"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(service_env(svc.settings.kafka_bootstrap_servers))
    env.update({
        "SWITCHBOARD_SUBSCRIPTIONS_TOPIC": svc.settings.subscriptions_topic,
        "SWITCHBOARD_SECRETS_KEY": f"{new_key_},{old_key}",
    })  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "reseal-secrets", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"resealed 1 subscriptions" in out
    # The newest record now opens with the new key alone.
    newest = (await read_all(svc.settings.kafka_bootstrap_servers,
                             svc.settings.subscriptions_topic, 2))[-1]  # fmt: skip
    sealed = orjson.loads(newest.value)["secret"].removeprefix("sealed:v1:")
    assert Fernet(new_key_.encode()).decrypt(sealed.encode()).decode() == created["secret"]


async def test_a_tenant_key_creates_for_its_tenant_without_naming_it(
    service: RunningService,
) -> None:
    key = await new_key(service, "tenant-a")
    auth = {"Authorization": f"Bearer {key}"}
    async with service.http.post(f"{service.base}/v1/subscriptions", json=SUB, headers=auth) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["tenant_id"] == "tenant-a"
    # The operator token acts for every tenant, so it must say which.
    async with service.http.post(f"{service.base}/v1/subscriptions", json=SUB) as r:
        assert r.status == 422
        assert (await r.json())["error"]["field"] == "tenant_id"
