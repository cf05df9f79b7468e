"""Kafka clients built from the settings: connection, security, and the internal topics."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

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


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password
    return kwargs


# Kafka clients flush, commit and leave their group when stopped; with the brokers gone each
# of those waits out request timeouts (tens of seconds), and a coordinator lookup can wait
# for ever. Past this a client is abandoned: the process exits, and what was not committed
# is read again by the partitions' next owner.
STOP_SECONDS: Final = 5.0


async def stop_within(stopping: Awaitable[Any], part: str, seconds: float = STOP_SECONDS) -> bool:
    """Await a client's stop, giving up after `seconds` (logged); never raises but for a
    cancellation of the caller. False when the stop did not complete."""
    try:
        async with asyncio.timeout(seconds):
            await stopping
    except TimeoutError:
        log.warning("stop_timed_out", part=part, seconds=seconds)
    except KafkaError as exc:
        log.warning("stop_failed", part=part, error=repr(exc))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller is being cancelled: not ours to swallow
        log.info("stop_interrupted", part=part)
    else:
        return True
    return False


async def stop_consumer(consumer: AIOKafkaConsumer, part: str) -> None:
    """Stop a consumer within STOP_SECONDS, its connections closed even when stop() breaks off.

    aiokafka 0.14's fetcher awaits its own cancelled fetch tasks in close() without
    suppressing the CancelledError, when a fetch was backing off after an error; stop() then
    ends there, before it closes the client's connections. Those are closed here instead.
    """
    if not await stop_within(consumer.stop(), part):
        await stop_within(consumer._client.close(), part)


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **connection_kwargs(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        # Quarantined records may be as large as the largest event accepted.
        max_request_size=max(1_048_576, settings.max_event_bytes + 64 * 1024),
    )


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
