"""Kafka clients built from the settings: connection, security, and stopping them in time."""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

from consumers.engine.partitioner import KeyPartitioner
from service.config import Settings

log = structlog.get_logger("switchboard.kafka")


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


# A read model's consumer (the history indexer) asks each fetch for at least this much, or
# waits this long: what it feeds lags a fraction of a second anyway (the indexer's linger), and
# a fetch costs the same per partition whatever it brings, since aiokafka encodes the request
# and decodes the answer partition by partition in Python, on the delivery path's core. Fetched
# as often as the deliveries, the history's partitions were most of what indexing cost the
# service (docs/performance.md).
READ_MODEL_FETCH_MIN_BYTES: Final = 64 * 1024
READ_MODEL_FETCH_WAIT_MS: Final = 250


def fetch_kwargs(settings: Settings, *, read_model: bool = False) -> dict[str, Any]:
    """How every consumer fetches: how long a fetch waits, and how much it brings."""
    kwargs: dict[str, Any] = {
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "max_partition_fetch_bytes": settings.kafka_max_partition_fetch_bytes,
        "fetch_max_bytes": settings.kafka_fetch_max_bytes,
    }
    if read_model:
        kwargs["fetch_min_bytes"] = READ_MODEL_FETCH_MIN_BYTES
        kwargs["fetch_max_wait_ms"] = max(
            READ_MODEL_FETCH_WAIT_MS, settings.kafka_fetch_max_wait_ms
        )
    return kwargs


def membership_kwargs(settings: Settings) -> dict[str, Any]:
    """How a member stays in its group: heartbeats within the session timeout, and a rebalance
    timeout that covers the revoke's grace. A member finishes its revoked partitions' jobs
    (REBALANCE_GRACE_SECONDS) before it rejoins; a broker drops a member that has not rejoined
    within the rebalance timeout and deals its partitions out, so with aiokafka's default (the
    session timeout) a grace longer than the session would let the next owner start while this
    one still finishes, and a key's deliveries run on two replicas at once."""
    session_ms = settings.kafka_session_timeout_ms
    return {
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": max(300, session_ms // 3),
        "rebalance_timeout_ms": session_ms + math.ceil(settings.rebalance_grace_seconds * 1000),
    }


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
    # A consumer of this service's making (the lookups' group-less one) has no client of its
    # own: it stops the clients it holds within the same bound.
    stopped = await stop_within(consumer.stop(), part)
    if not stopped and (client := getattr(consumer, "_client", None)) is not None:
        await stop_within(client.close(), part)


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **connection_kwargs(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        partitioner=KeyPartitioner(),
        linger_ms=5,
        # Quarantined records may be as large as the largest event accepted.
        max_request_size=max(1_048_576, settings.max_event_bytes + 64 * 1024),
        # A partition has one batch in flight at a time: with aiokafka's 16 KiB default, an
        # endpoint's backlog handed to a one-partition retry tier moved at a few MB a minute
        # and timed out in the accumulator (the isolation benchmark, docs/performance.md).
        max_batch_size=1_048_576,
    )


def new_group_consumer(
    settings: Settings, group_id: str, *, co_partitioned: bool = False, read_model: bool = False
) -> AIOKafkaConsumer:
    """A consumer in a group, committing only what the group loop tells it to.

    `co_partitioned`: its topics have the same partition count and key, and partition p of
    every one of them must go to the same member. The range assignor does that (it splits each
    topic's partitions into the same ranges over the same sorted members); aiokafka's default,
    round robin, deals the partitions of all topics out in turn and would not. `read_model`:
    it feeds a read model, and fetches less often (fetch_kwargs)."""
    assignors = (RangePartitionAssignor,) if co_partitioned else (RoundRobinPartitionAssignor,)
    return AIOKafkaConsumer(
        **connection_kwargs(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        max_poll_records=settings.max_poll_records,
        **fetch_kwargs(settings, read_model=read_model),
        **membership_kwargs(settings),
        partition_assignment_strategy=assignors,
    )
