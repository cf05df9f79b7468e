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
# The lookup members topic gets a heartbeat a second per replica and is read whole by each
# replica at start: short segments, since the active segment is never compacted.
_MEMBERS_CONFIG: Final = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60_000),
    "min.cleanable.dirty.ratio": "0.1",
}


class TopicLayoutError(Exception):
    """The delivery stage's topics do not have one partition count (an operator's to fix)."""


async def ensure_topics(settings: Settings, retry_topics: list[str]) -> None:
    """Create the internal topics that are missing, leaving existing ones as they are, and
    check that the delivery stage's topics are co-partitioned (TopicLayoutError if not)."""
    admin = AIOKafkaAdminClient(**connection_kwargs(settings))
    await admin.start()
    try:
        if settings.create_topics:
            await _create_missing(admin, settings, retry_topics)
        await _check_co_partitioned(
            admin, [settings.deliveries_topic, *_state_topics(settings), *retry_topics]
        )
    finally:
        await admin.close()


async def _create_missing(
    admin: AIOKafkaAdminClient, settings: Settings, retry_topics: list[str]
) -> None:
    def new(name: str, **configs: str) -> NewTopic:
        return NewTopic(
            name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            topic_configs=configs,
        )

    wanted = [
        new(settings.subscriptions_topic, **{"cleanup.policy": "compact"}),
        new(settings.ordering_topic, **{"cleanup.policy": "compact"}),
        new(settings.parking_topic, **{"cleanup.policy": "compact"}),
        new(settings.invalid_topic, **_deleted_after(_QUARANTINE_DAYS)),
        new(settings.dead_letter_topic, **_deleted_after(_DEAD_LETTER_DAYS)),
        new(settings.ops_topic, **_deleted_after(_OPS_DAYS)),
        new(settings.attempts_topic, **_deleted_after(_ATTEMPTS_DAYS)),
        new(settings.deliveries_topic, **_deleted_after(_RETRY_DAYS)),
        *(new(name, **_deleted_after(_RETRY_DAYS)) for name in retry_topics),
    ]
    if settings.lookup_topics:
        # One partition: every reader reads a member's positions before its heartbeat.
        members = NewTopic(
            settings.lookup_members_topic,
            num_partitions=1,
            replication_factor=settings.topic_replication_factor,
            topic_configs=_MEMBERS_CONFIG,
        )
        wanted.append(members)
    response = await admin.create_topics(wanted)
    for topic, code, message in _topic_errors(response):
        if code == 0:
            log.info("topic_created", topic=topic)
        elif code != _TOPIC_EXISTS:
            raise RuntimeError(f"cannot create topic {topic}: error {code}: {message}")


async def _check_co_partitioned(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """A subscription's deliveries, retries, ordering keys and parked deliveries must land in
    partitions that one replica owns: that holds only if those topics all have the same
    partition count."""
    counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{topic}={n}" for topic, n in sorted(counts.items()))
        raise TopicLayoutError(
            f"the deliveries, ordering, parking and retry topics need the same partition count "
            f"(found {listed}); add partitions to the smaller ones"
        )


def _state_topics(settings: Settings) -> list[str]:
    """The delivery stage's state, read by partition by its owner."""
    return [settings.ordering_topic, settings.parking_topic]


def _deleted_after(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * 86_400_000)}


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]
