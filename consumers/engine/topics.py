"""The internal topics: created at start when missing, with retention fit for each."""

from __future__ import annotations

from typing import Any, Final

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from consumers.engine.clients import connection_kwargs
from service.config import Settings

log = structlog.get_logger("switchboard.kafka")

# Kafka's error code for "topic already exists" in a CreateTopics response.
_TOPIC_EXISTS: Final = TopicAlreadyExistsError.errno
# Retention of the internal topics created by the service. A retry record waits at most a day
# (MAX_RETRY_WAIT) and must be read before it is deleted, even after a long outage; dead
# letters and quarantined records are kept for two weeks of investigation and replay.
_RETRY_DAYS: Final = 7
_DEAD_LETTER_DAYS: Final = 14
_QUARANTINE_DAYS: Final = 14
_OPS_DAYS: Final = 7
# The delivery log answers "what happened to my webhooks lately"; older history is metrics'.
_ATTEMPTS_DAYS: Final = 3


async def ensure_topics(settings: Settings, retry_topics: list[str]) -> None:
    """Create the internal topics that are missing; leave existing ones as they are."""
    if not settings.create_topics:
        return

    def new(name: str, **configs: str) -> NewTopic:
        return NewTopic(
            name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            topic_configs=configs,
        )

    wanted = [
        new(settings.subscriptions_topic, **{"cleanup.policy": "compact"}),
        new(settings.invalid_topic, **_deleted_after(_QUARANTINE_DAYS)),
        new(settings.dead_letter_topic, **_deleted_after(_DEAD_LETTER_DAYS)),
        new(settings.ops_topic, **_deleted_after(_OPS_DAYS)),
        new(settings.attempts_topic, **_deleted_after(_ATTEMPTS_DAYS)),
        *(new(name, **_deleted_after(_RETRY_DAYS)) for name in retry_topics),
    ]
    admin = AIOKafkaAdminClient(**connection_kwargs(settings))
    await admin.start()
    try:
        response = await admin.create_topics(wanted)
        for topic, code, message in _topic_errors(response):
            if code == 0:
                log.info("topic_created", topic=topic)
            elif code != _TOPIC_EXISTS:
                raise RuntimeError(f"cannot create topic {topic}: error {code}: {message}")
    finally:
        await admin.close()


def _deleted_after(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * 86_400_000)}


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]
