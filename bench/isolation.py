"""Isolation benchmark: a healthy endpoint's drain rate alone, and beside one that cannot keep up.

One tenant, a backlog of --events events, two subscriptions to the same events: the healthy
one (a fast local receiver, counted) and a neighbour that is rate-limited to 10/s, refuses
connections, or answers after 10 s, on another partition of the deliveries topic than the
healthy one; `limited-shared` puts the rate-limited neighbour on the same partition. Each
variant starts a fresh service on the backlog and measures how fast the healthy endpoint
receives all of it; the figure is its ratio to the healthy endpoint alone, measured in the
same run.

    .venv/bin/python -m bench.isolation [--events 20000]
        [--variants alone,limited,refused,slow,limited-shared]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from typing import Any

import aiohttp
import msgspec
import orjson

from bench.common import (
    RESULTS,
    cpu_seconds,
    create_topics,
    peak_rss_mib,
    produce,
    write_subscription,
)
from bench.e2e import PARTITIONS, SinkClient, service_env, start_sink
from service.config import Settings
from service.delivery.netguard import AddressPolicy
from service.subscriptions.model import SubscriptionCreate, new_subscription
from tools.partitions import partition_of
from tools.tansu import TansuBroker, free_port
from tools.voice_events import EVENT_TYPES, cloud_event

# The service's default partition count of the deliveries topic.
PARTITIONS_DELIVERIES = Settings(admin_token="x" * 16).topic_partitions
# The slow neighbour answers after this; its timeout is above it, so it never times out.
SLOW_SECONDS = 10.0


def neighbour(variant: str, sink_base: str) -> dict[str, Any] | None:
    if variant == "alone":
        return None
    url = {
        "limited": sink_base + "/neighbour",
        "limited-shared": sink_base + "/neighbour",
        "refused": f"http://127.0.0.1:{free_port()}/nobody",
        "slow": sink_base + "/slow",
    }[variant]
    limited = variant.startswith("limited")
    extra: dict[str, Any] = {"rate_limit": {"per_second": 10}} if limited else {}
    if variant == "slow":
        extra["timeout_seconds"] = SLOW_SECONDS + 5
    return {"name": "neighbour", "url": url, **extra}


async def run_variant(
    broker: TansuBroker, sink: SinkClient, values: list[bytes], variant: str, within: float
) -> dict[str, float]:
    bootstrap, n = broker.bootstrap, len(values)
    topic, subs = f"iso.events.{variant}", f"iso.subscriptions.{variant}"
    await create_topics(bootstrap, [(topic, PARTITIONS, {})])
    await produce(bootstrap, topic, values)
    policy = AddressPolicy(allow_private=True, allow_http=True)
    base = {"tenant_id": "bench", "event_types": ["*"], "max_in_flight": 64}
    healthy = new_subscription(
        msgspec.convert({**base, "name": "healthy", "url": sink.url}, SubscriptionCreate), policy
    )
    await write_subscription(bootstrap, subs, healthy)
    if (spec := neighbour(variant, sink.base)) is not None:
        # On another partition of the deliveries topic than the healthy one (another owner's
        # queue in a fleet), or, for a "-shared" variant, on the same one.
        shared = variant.endswith("-shared")
        while True:
            other = new_subscription(msgspec.convert({**base, **spec}, SubscriptionCreate), policy)
            same = partition_of(other.id, PARTITIONS_DELIVERIES) == partition_of(
                healthy.id, PARTITIONS_DELIVERIES
            )
            if same == shared:
                break
        await write_subscription(bootstrap, subs, other)
    await sink.reset()
    env = service_env(bootstrap, "uvloop", topic, f"iso-{variant}", subs)
    env["SWITCHBOARD_DEAD_LETTER_TOPIC"] = f"iso.dlq.{variant}"
    env["SWITCHBOARD_ATTEMPTS_TOPIC"] = f"iso.attempts.{variant}"
    # Each variant's own: what one variant left parked is not the next one's work.
    env["SWITCHBOARD_PARKING_TOPIC"] = f"iso.parked.{variant}"
    env["SWITCHBOARD_ORDERING_TOPIC"] = f"iso.ordering.{variant}"
    broker_cpu = cpu_seconds(broker.pid)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli", env=env)
    started = time.monotonic()
    try:
        stats = await sink.wait_count(n, within=within)
        # A healthy endpoint held back past the wait is a result too: its count says how far.
        received = stats["count"]
        # CPU per healthy delivery moves less with the machine's load than the rate does: the
        # figure to compare between runs; the broker's, since it shares the two cores.
        per_1000 = 1000 / max(1, received)
        return {
            "received": received,
            "rate": (received - 1) / max(1e-9, stats["last"] - stats["first"]),
            "seconds_from_start": time.monotonic() - started,
            "peak_rss_mib": peak_rss_mib(proc.pid),
            "service_cpu_ms_per_1000": 1000 * cpu_seconds(proc.pid) * per_1000,
            "broker_cpu_ms_per_1000": 1000 * (cpu_seconds(broker.pid) - broker_cpu) * per_1000,
        }
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(5)
    values = [cloud_event(rng.choice(EVENT_TYPES), "bench", rng) for _ in range(args.events)]
    results: dict[str, Any] = {"events": args.events, "variants": {}}
    with TansuBroker() as broker:
        sink_proc, sink_base = await start_sink(slow_delay=SLOW_SECONDS)
        try:
            async with aiohttp.ClientSession() as http:
                sink = SinkClient(http, sink_base)
                await sink.wait_up()
                for variant in args.variants.split(","):
                    results["variants"][variant] = await run_variant(
                        broker, sink, values, variant, args.within
                    )
        finally:
            sink_proc.terminate()
            await sink_proc.wait()
    return results


def report(res: dict[str, Any]) -> str:
    variants = res["variants"]
    alone = variants.get("alone", {}).get("rate")
    lines = [f"events {res['events']}, healthy endpoint's drain rate:"]
    for name, r in variants.items():
        ratio = f" ({100 * r['rate'] / alone:.0f}% of alone)" if alone else ""
        lines.append(
            f"  {name:8} {r['rate']:.0f}/s{ratio}; {r['received']:.0f} of {res['events']} in "
            f"{r['seconds_from_start']:.1f} s from start; peak RSS {r['peak_rss_mib']:.0f} MiB; "
            f"CPU per 1000: service {r['service_cpu_ms_per_1000']:.0f} ms, "
            f"broker {r['broker_cpu_ms_per_1000']:.0f} ms"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--within", type=float, default=300, help="seconds to wait per variant")
    parser.add_argument("--variants", default="alone,limited,refused,slow,limited-shared")
    result = asyncio.run(main(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"isolation-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(report(result))
