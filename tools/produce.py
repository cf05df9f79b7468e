"""Produce test events: `python -m tools.produce call.ended --tenant acme`.

Each event is the catalog's sample of its type with varied values (tools/voice_events.py),
as a structured CloudEvent, on the service's event topic. Prints the ids, so that
`GET /v1/events/{id}` can say what became of each. The broker and topic come from the
options, else from SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS and SWITCHBOARD_EVENT_TOPICS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import uuid
from collections.abc import Sequence
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from service.catalog.entries import BY_TYPE
from tools.voice_events import cloud_event

# Enough to try a subscription's filters and rate limit; a load test is bench/e2e.py.
MAX_COUNT: Final = 10_000


async def produce(
    bootstrap: str, topic: str, event_type: str, tenant: str, count: int, *, idempotent: bool
) -> list[str]:
    rng = random.Random()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=idempotent)
    await producer.start()
    try:
        ids = []
        for _ in range(count):
            event_id = "evt_" + uuid.uuid4().hex
            await producer.send(topic, cloud_event(event_type, tenant, rng, event_id))
            ids.append(event_id)
        await producer.flush()
        return ids
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m tools.produce", description=__doc__)
    parser.add_argument("event_type", help="e.g. call.ended; GET /v1/event-types lists them")
    parser.add_argument("--tenant", required=True, help="the tenant the event belongs to")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument(
        "--bootstrap",
        default=env.get("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
    )
    parser.add_argument(
        "--topic",
        default=env.get("SWITCHBOARD_EVENT_TOPICS", "voice.events").split(",")[0].strip(),
    )
    parser.add_argument(
        "--no-idempotence", action="store_true",
        help="for brokers without idempotent producers (the test broker)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count: 1..{MAX_COUNT}")
    if args.event_type not in BY_TYPE:
        print(f"note: {args.event_type!r} is not in the event catalog; its data is a bare "
              "agent object", file=sys.stderr)  # fmt: skip
    try:
        run = produce(
            args.bootstrap,
            args.topic,
            args.event_type,
            args.tenant,
            args.count,
            idempotent=not args.no_idempotence,
        )
        ids = asyncio.run(run)
    except KafkaError as exc:
        print(f"cannot produce to {args.topic} at {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    for event_id in ids:
        print(event_id)
    print(f"{len(ids)} {args.event_type} event(s) of tenant {args.tenant} on {args.topic}; "
          "GET /v1/events/{id} says what became of each", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
