"""Success conditions, time budgets, test sends, the delivery log and stats, end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.catalog.entries import BY_TYPE
from service.delivery.record import decode
from tests.conftest import RunningService, start_service
from tests.helpers.history import poll
from tests.helpers.kafka import read_all
from tests.helpers.webhooks import Recorder, Seen, json_answer, send_event


async def get(svc: RunningService, path: str, **headers: str) -> Any:
    async with svc.http.get(svc.base + path, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_success_conditions_budgets_and_the_attempt_log(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(retry_schedule="0.05,0.05,0.05,0.05,0.3")
    # Per path, the answers in turn (a response object can be sent once); the last repeats.
    answers: dict[str, list[Callable[[], web.Response]]] = {}

    def answer(seen: Seen) -> web.Response:
        queue = answers[seen.path]
        return (queue.pop(0) if len(queue) > 1 else queue[0])()

    recorder = Recorder(answer)
    base = await http_server(recorder.app())
    # Accepted only with {"result": {"accepted": true}}: the first answer says false.
    answers["/crm"] = [lambda: json_answer({"result": {"accepted": False}}),
                       lambda: json_answer({"result": {"accepted": True}})]  # fmt: skip
    crm = await svc.create_subscription(
        tenant_id="acme", name="crm", url=base + "/crm", event_types=["call.ended"],
        success={"status_codes": [200], "json_path": "result.accepted", "json_value": True},
    )  # fmt: skip
    # 202 is not in the accepted list; two attempts allowed, then a dead letter.
    answers["/strict"] = [lambda: web.Response(status=202)]
    strict = await svc.create_subscription(
        tenant_id="acme", name="strict", url=base + "/strict", event_types=["call.ended"],
        success={"status_codes": [200, 201]}, max_attempts=2,
    )  # fmt: skip
    # Always 500, with a total time budget that ends before the schedule does.
    answers["/budget"] = [lambda: web.Response(status=500)]
    budget = await svc.create_subscription(
        tenant_id="acme", name="budget", url=base + "/budget", event_types=["call.ended"],
        retry_window_seconds=0.12,
    )  # fmt: skip
    event_id = await send_event(producer, svc.topic, "call.ended", BY_TYPE["call.ended"].sample)
    dead = await read_all(svc.settings.kafka_bootstrap_servers,
                          svc.settings.dead_letter_topic, 2)  # fmt: skip
    letters = {decode(r.value).subscription_id: decode(r.value) for r in dead}
    assert letters[strict["id"]].reason == "exhausted"
    assert letters[strict["id"]].attempts == 2
    assert letters[strict["id"]].last_error.outcome == "condition_failed"  # type: ignore[union-attr]
    assert letters[budget["id"]].reason == "retry_window"
    assert 2 <= len(recorder.at("/budget")) < 5  # the schedule alone allows 6
    assert len(recorder.at("/crm")) == 2

    # The delivery log: every attempt, newest first, with why it failed.
    path = f"/v1/subscriptions/{crm['id']}/attempts"
    log = await poll(svc, path, lambda b: len(b["data"]) == 2)
    assert [a["outcome"] for a in log["data"]] == ["success", "condition_failed"]
    failed = log["data"][1]
    assert failed["error"] == "response result.accepted is false, expected true"
    assert failed["status"] == 200
    assert failed["attempt"] == 1
    assert failed["event_id"] == event_id
    assert failed["trigger"] == "delivery"
    assert '"accepted": false' in failed["response_excerpt"]
    assert (await get(svc, path + "?outcome=failure"))["data"] == [failed]
    assert (await get(svc, path + "?event_type=call.started"))["data"] == []
    assert (await get(svc, path + "?since=2999-01-01T00:00:00Z"))["data"] == []
    first = await get(svc, path + "?limit=1")
    assert first["data"] == log["data"][:1]
    rest = await get(svc, path + f"?limit=1&before={first['next_before']}")
    assert rest["data"] == [failed]
    assert rest["next_before"] is None
    async with svc.http.get(svc.base + path + "?outcome=maybe") as resp:
        assert resp.status == 400
        # The accepted values are named, not only "an outcome class".
        assert "client_error" in (await resp.json())["error"]["message"]

    # The history of one event across its subscriptions.
    by_event = await poll(svc, f"/v1/events/{event_id}/attempts?limit=1000",
                          lambda b: len(b["data"]) >= 6)  # fmt: skip
    subs_seen = {a["subscription_id"] for a in by_event["data"]}
    assert subs_seen == {crm["id"], strict["id"], budget["id"]}

    stats = await get(svc, f"/v1/subscriptions/{crm['id']}/stats")
    assert stats["windows"]["5m"]["attempts"] == 2
    assert stats["windows"]["5m"]["success_rate"] == 0.5
    assert stats["windows"]["1h"]["latency_ms"]["p50"] is not None

    # Another replica (same topics, same store) answers the same.
    other = await start_service(svc.settings)
    try:
        assert (await get(other, path)) == log
    finally:
        await other.stop()
        await other.http.close()

    # A tenant key sees its own tenant's log only.
    async with svc.http.post(f"{svc.base}/v1/api-keys", json={"tenant_id": "globex"}) as resp:
        other_key = {"Authorization": f"Bearer {(await resp.json())['key']}"}
    async with svc.http.get(svc.base + path, headers=other_key) as resp:
        assert resp.status == 404
    assert (await get(svc, f"/v1/events/{event_id}/attempts", **other_key))["data"] == []


async def test_test_send_goes_through_the_real_path_and_masks_secrets(
    service: RunningService, http_server: Any
) -> None:
    recorder = Recorder(lambda _s: json_answer({"ok": True, "ticket": "T-1"}, status=201))
    base = await http_server(recorder.app())
    sub = await service.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["call.summary_ready"],
        auth={"type": "bearer", "token": "tok-secret-123"},
        body_template={"phone": "{{data.contact.phoneNumber}}", "kind": "{{type}}"},
        enabled=False,
    )  # fmt: skip
    url = f"{service.base}/v1/subscriptions/{sub['id']}/test"
    async with service.http.post(url, json={"event_type": "call.summary_ready"}) as resp:
        assert resp.status == 200
        sent = await resp.json()
    assert sent["delivered"] is True
    assert sent["status"] == 201
    assert sent["outcome"] == "success"
    assert sent["latency_ms"] > 0
    assert sent["response_excerpt"] == '{"ok": true, "ticket": "T-1"}'
    request = sent["request"]
    assert request["method"] == "POST"
    assert request["url"] == base + "/hook"
    assert request["headers"]["Authorization"] == "********"
    assert request["headers"]["webhook-signature"].startswith("v1,")
    assert request["body"] == '{"phone":"+14155550123","kind":"call.summary_ready"}'
    [seen] = recorder.seen
    assert seen.headers["Authorization"] == "Bearer tok-secret-123"
    assert seen.body.decode() == request["body"]
    assert "tok-secret-123" not in str(sent)
    # A given payload, for a type outside the catalog.
    async with service.http.post(url, json={"event_type": "crm.ping", "data": {"n": 7}}) as resp:
        assert (await resp.json())["request"]["body"] == '{"phone":null,"kind":"crm.ping"}'
    async with service.http.post(url, json={"event_type": "crm.ping"}) as resp:
        assert resp.status == 422
    # Logged as a test: in the attempts, not in the stats.
    attempts = await poll(service, f"/v1/subscriptions/{sub['id']}/attempts?trigger=test",
                          lambda b: len(b["data"]) == 2)  # fmt: skip
    assert len(attempts["data"]) == 2
    stats = await get(service, f"/v1/subscriptions/{sub['id']}/stats")
    assert stats["windows"]["5m"]["attempts"] == 0
    # A failing endpoint: the attempt and its failure are the answer, not an API error.
    dead = await service.create_subscription(
        tenant_id="acme", name="down", url="http://127.0.0.1:9/nothing", event_types=["call.*"]
    )
    async with service.http.post(
        f"{service.base}/v1/subscriptions/{dead['id']}/test", json={"event_type": "call.ended"}
    ) as resp:
        failed = await resp.json()
    assert failed["delivered"] is False
    assert failed["outcome"] == "connect_error"
    assert failed["status"] is None
