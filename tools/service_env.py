"""Settings for a service started by a test or a fault scenario: its own topics and group,
so that runs sharing a broker never see each other's data, and short timings for loopback;
and its event topic, which the service does not create."""

from __future__ import annotations

import uuid
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# Known to the tests and scenarios that call the admin API; never a deployment's.
ADMIN_TOKEN: Final = "test-admin-token-0123456789"  # noqa: S105


def service_env(bootstrap: str, **overrides: Any) -> dict[str, str]:
    """Settings for one test: its own topics and group, so tests never see each other's data."""
    run = uuid.uuid4().hex[:10]
    env = {
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "SWITCHBOARD_EVENT_TOPICS": f"voice.events.{run}",
        "SWITCHBOARD_GROUP_ID": f"switchboard-{run}",
        "SWITCHBOARD_SUBSCRIPTIONS_TOPIC": f"switchboard.subscriptions.{run}",
        "SWITCHBOARD_INVALID_TOPIC": f"switchboard.invalid.{run}",
        "SWITCHBOARD_DEAD_LETTER_TOPIC": f"switchboard.dlq.{run}",
        "SWITCHBOARD_OPS_TOPIC": f"switchboard.ops.{run}",
        "SWITCHBOARD_ATTEMPTS_TOPIC": f"switchboard.attempts.{run}",
        "SWITCHBOARD_RETRY_TOPIC_PREFIX": f"switchboard.retry.{run}",
        "SWITCHBOARD_DELIVERIES_TOPIC": f"switchboard.deliveries.{run}",
        "SWITCHBOARD_ORDERING_TOPIC": f"switchboard.ordering.{run}",
        "SWITCHBOARD_PARKING_TOPIC": f"switchboard.parked.{run}",
        "SWITCHBOARD_LOOKUP_MEMBERS_TOPIC": f"switchboard.lookup-members.{run}",
        "SWITCHBOARD_TOPIC_PARTITIONS": "1",
        # Three retries within half a second; the circuit stays out of tests not about it.
        "SWITCHBOARD_RETRY_SCHEDULE": "0.05,0.1,0.2",
        "SWITCHBOARD_CIRCUIT_MIN_CALLS": "100000",
        "SWITCHBOARD_TOPIC_REPLICATION_FACTOR": "1",
        "SWITCHBOARD_HTTP_HOST": "127.0.0.1",
        "SWITCHBOARD_HTTP_PORT": "0",
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
        "SWITCHBOARD_ALLOW_PRIVATE_TARGETS": "true",
        "SWITCHBOARD_ALLOW_HTTP": "true",
        "SWITCHBOARD_COMMIT_INTERVAL_SECONDS": "0.2",
        "SWITCHBOARD_SHUTDOWN_GRACE_SECONDS": "2",
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS": "50",
        # The test broker answers a group join after half the session timeout.
        "SWITCHBOARD_KAFKA_SESSION_TIMEOUT_MS": "3000",
    }
    env.update({f"SWITCHBOARD_{k.upper()}": str(v) for k, v in overrides.items() if v is not None})
    return env


async def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
