"""Why didn't event X arrive? Every event's routing decision, readable by its id."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from service.catalog.entries import BY_TYPE
from tests.conftest import RunningService, wait_until
from tests.helpers.history import poll
from tests.helpers.webhooks import Recorder, send_event

ENDED: dict[str, Any] = BY_TYPE["call.ended"].sample  # duration 125, agent_12345


async def event_record(svc: RunningService, event_id: str, **kwargs: Any) -> dict[str, Any]:
    """GET /v1/events/{id} once the event's decision has reached the history store."""
    body: dict[str, Any] = await poll(
        svc, f"/v1/events/{event_id}", lambda b: b.get("routing") is not None
    )
    return body


async def test_each_event_says_where_it_went_and_which_condition_dropped_it(
    service: RunningService, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc = service
    recorder = Recorder()
    base = await http_server(recorder.app())
    long_calls = await svc.create_subscription(
        tenant_id="acme", name="long calls", url=base + "/long", event_types=["call.ended"],
        filters=[
            {"path": "data.agent.id", "op": "eq", "value": "agent_12345"},
            {"path": "data.call.duration", "op": "gt", "value": 600},
        ],
    )  # fmt: skip
    everything = await svc.create_subscription(
        tenant_id="acme", name="all", url=base + "/all", event_types=["call.*"]
    )
    strict = await svc.create_subscription(
        tenant_id="acme", name="strict", url=base + "/strict", event_types=["call.started"],
        strict_schema=True,
    )  # fmt: skip
    await svc.create_subscription(
        tenant_id="solo", name="long only", url=base + "/solo", event_types=["call.ended"],
        filters=[{"path": "data.call.duration", "op": "gt", "value": 600}],
    )  # fmt: skip

    ended = await send_event(producer, svc.topic, "call.ended", ENDED)
    record = await event_record(svc, ended)
    assert record["event_id"] == ended
    routing = record["routing"]
    assert routing["outcome"] == "matched"
    assert routing["matched"] == [everything["id"]]
    # Which condition of which subscription dropped it: the second, on the duration.
    assert routing["filtered"] == [
        {
            "subscription_id": long_calls["id"],
            "condition": {"index": 1, "path": "data.call.duration", "op": "gt"},
        }
    ]
    assert await wait_until(lambda: len(recorder.at("/all")) == 1, 15)
    with_attempt = await poll(svc, f"/v1/events/{ended}", lambda b: len(b["attempts"]) == 1)
    [attempt] = with_attempt["attempts"]
    assert attempt["subscription_id"] == everything["id"]

    only_filtered = await send_event(producer, svc.topic, "call.ended", ENDED, tenant="solo")
    assert (await event_record(svc, only_filtered))["routing"]["outcome"] == "filtered"

    nobody = await send_event(producer, svc.topic, "call.ended", ENDED, tenant="nobody")
    unrouted = await event_record(svc, nobody)
    assert unrouted["routing"]["outcome"] == "no_subscription"
    assert unrouted["attempts"] == []

    started = await send_event(producer, svc.topic, "call.started", {"call": {}})
    refused = (await event_record(svc, started))["routing"]
    assert refused["outcome"] == "matched"  # the call.* subscription took it
    [schema] = refused["schema_refused"]
    assert schema["subscription_id"] == strict["id"]
    assert "agent" in schema["error"]

    broken = {"specversion": "1.0", "id": "evt_broken_1", "tenantid": "acme", "type": "call.x"}
    await producer.send_and_wait(svc.topic, orjson.dumps(broken))
    quarantined = (await event_record(svc, "evt_broken_1"))["routing"]
    assert quarantined["outcome"] == "quarantined"
    assert quarantined["quarantine"]["reason"] == "missing_field"
    assert "source" in quarantined["quarantine"]["detail"]

    # An id never seen is told apart from all of these.
    async with svc.http.get(f"{svc.base}/v1/events/evt_never_seen") as r:
        assert r.status == 404
        error = (await r.json())["error"]
    assert error["code"] == "not_found"
    assert error["message"].startswith("no record of this event")
    # Another tenant's key: the same 404 as an unknown id.
    async with svc.http.post(f"{svc.base}/v1/api-keys", json={"tenant_id": "globex"}) as r:
        other = {"Authorization": f"Bearer {(await r.json())['key']}"}
    async with svc.http.get(f"{svc.base}/v1/events/{ended}", headers=other) as r:
        assert r.status == 404
