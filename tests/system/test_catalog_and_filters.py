"""The event catalog, field filters and strict schema validation, end to end."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from service.catalog.entries import BY_TYPE
from service.delivery.record import decode
from tests.conftest import RunningService, wait_until
from tests.helpers.kafka import read_all
from tests.helpers.webhooks import Recorder, send_event

# Every type the issue names; the catalog may hold more, never fewer.
NAMED_TYPES = [
    "call.started",
    "call.ended",
    "call.failed",
    "call.queued",
    "call.voicemail_detected",
    "call.status_changed",
    "call.transcript_ready",
    "call.recording_ready",
    "call.quality_scored",
    "call.cost_calculated",
    "call.summary_ready",
    "conversation.completed",
    "conversation.transcript",
    "conversation.intent_detected",
    "conversation.entity_captured",
    "contact.created",
    "contact.updated",
    "participant.created",
    "participant.profile_updated",
    "participant.tags_added",
    "message.sent",
    "agent.status_changed",
    "agent.config_updated",
    "agent.sync_status_changed",
    "agent.performance_alert",
    "campaign.started",
    "campaign.paused",
    "campaign.completed",
    "campaign.quota_reached",
    "knowledge_base.updated",
    "phone_number.updated",
    "user.action",
    "system.maintenance",
    "call.inbound",
]


async def test_event_types_route_lists_the_whole_catalog(service: RunningService) -> None:
    async with service.http.get(f"{service.base}/v1/event-types") as resp:
        assert resp.status == 200
        listed = {e["type"]: e for e in (await resp.json())["data"]}
    assert set(NAMED_TYPES) <= set(listed)
    for entry in listed.values():
        assert entry["description"]
        assert entry["schema"]["type"] == "object"
        assert isinstance(entry["sample"], dict)
    async with service.http.get(f"{service.base}/v1/event-types/call.summary_ready") as resp:
        one = await resp.json()
    assert one["sample"]["summary"].startswith("Jane Doe")
    # The paths an ordering key names: the call's id, and who took part.
    assert one["keys"] == {"call_id": "data.call.id", "contact_id": "data.contact.id",
                           "agent_id": "data.agent.id"}  # fmt: skip
    async with service.http.get(f"{service.base}/v1/event-types/call.nope") as resp:
        assert resp.status == 404
    async with service.http.get(f"{service.base}/v1/event-types?group=Campaigns") as resp:
        campaigns = [e["type"] for e in (await resp.json())["data"]]
    assert campaigns == ["campaign.started", "campaign.paused", "campaign.completed",
                         "campaign.quota_reached"]  # fmt: skip


async def test_filters_choose_events_and_strict_schema_dead_letters_the_rest(
    service: RunningService, http_server: Any, producer: AIOKafkaProducer
) -> None:
    recorder = Recorder()
    base = await http_server(recorder.app())
    filtered = await service.create_subscription(
        tenant_id="acme", name="long calls of one agent", url=base + "/filtered",
        event_types=["call.ended"],
        filters=[
            {"path": "data.agent.id", "op": "eq", "value": "agent_12345"},
            {"path": "data.call.duration", "op": "gt", "value": 60},
            {"path": "data.call.campaign_id", "op": "in", "value": ["camp_a", "camp_b"]},
        ],
    )  # fmt: skip
    strict = await service.create_subscription(
        tenant_id="acme", name="strict", url=base + "/strict", event_types=["*"],
        strict_schema=True,
    )  # fmt: skip
    await service.create_subscription(
        tenant_id="acme", name="everything", url=base + "/all", event_types=["*"]
    )
    sample = BY_TYPE["call.ended"].sample
    call = sample["call"]

    def ended(agent: str, duration: int, campaign: str) -> dict[str, Any]:
        return {**sample, "agent": {"id": agent},
                "call": {**call, "duration": duration, "campaign_id": campaign}}  # fmt: skip

    topic = service.topic
    wanted = await send_event(producer, topic, "call.ended", ended("agent_12345", 125, "camp_a"))
    await send_event(producer, topic, "call.ended", ended("agent_12345", 30, "camp_a"))
    await send_event(producer, topic, "call.ended", ended("agent_999", 125, "camp_b"))
    await send_event(producer, topic, "call.ended", ended("agent_12345", 125, "camp_z"))
    # Misses required `call.status`: not what the catalog says a call.ended carries.
    broken = await send_event(producer, topic, "call.ended", {"call": {"id": "c", "duration": 5},
                                                                "agent": {"id": "a"}})  # fmt: skip
    # Not in the catalog: routed to everything, refused by the strict one.
    unknown = await send_event(producer, topic, "call.hologram_started", {"x": 1})
    assert await wait_until(lambda: len(recorder.at("/all")) == 6, within=20)
    assert await wait_until(lambda: len(recorder.at("/strict")) == 4, within=10)
    assert [s.json()["id"] for s in recorder.at("/filtered")] == [wanted]
    assert broken not in {s.json()["id"] for s in recorder.at("/strict")}
    assert unknown in {s.json()["id"] for s in recorder.at("/all")}
    dead = await read_all(service.settings.kafka_bootstrap_servers,
                          service.settings.dead_letter_topic, 2)  # fmt: skip
    letters = {decode(r.value).event.id: decode(r.value) for r in dead}
    assert set(letters) == {broken, unknown}
    for letter in letters.values():
        assert letter.reason == "schema_mismatch"
        assert letter.subscription_id == strict["id"]
        assert letter.last_error is not None
    assert "status" in (letters[broken].last_error.error or "")  # type: ignore[union-attr]
    assert "not in the event catalog" in (letters[unknown].last_error.error or "")  # type: ignore[union-attr]
    assert filtered["filters"][1] == {"path": "data.call.duration", "op": "gt", "value": 60}


async def test_filters_and_templates_are_checked_when_saved(service: RunningService) -> None:
    base = {"tenant_id": "acme", "name": "x", "url": "http://127.0.0.1:9/h",
            "event_types": ["call.ended"]}  # fmt: skip
    cases: list[tuple[dict[str, Any], str]] = [
        ({"filters": [{"path": "data.a", "op": "matches", "value": "x"}]}, "filters"),
        ({"filters": [{"path": "body.a", "op": "eq", "value": 1}]}, "filters"),
        ({"filters": [{"path": "data.a", "op": "in", "value": 3}]}, "filters"),
        ({"body_template": {"n": "{{data.a"}}, "body_template"),
        ({"body_template": {"n": "{{__import__('os')}}"}}, "body_template"),
        ({"body_fields": ["data..x"]}, "body_fields"),
        ({"body_template": {}, "body_fields": ["type"]}, "body_template"),
        ({"headers": {"X-Caller": "{{data.contact.phoneNumber"}}, "headers"),
        ({"success": {"status_codes": [700]}}, "success"),
        ({"auth": {"type": "api_key", "header": "Content-Type", "key": "k"}}, "auth.header"),
        ({"auth": {"type": "bearer", "token": "t"}, "headers": {"Authorization": "x"}},
         "headers"),
        ({"auth": {"type": "oauth2_client_credentials", "token_url": "ftp://x/t",
                   "client_id": "c", "client_secret": "s"}}, "auth.token_url"),
    ]  # fmt: skip
    for extra, field in cases:
        async with service.http.post(
            f"{service.base}/v1/subscriptions", json={**base, **extra}
        ) as resp:
            body = await resp.json()
            assert resp.status == 422, (extra, body)
            assert body["error"]["field"] == field, (extra, body)
