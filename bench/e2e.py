"""End-to-end benchmark: Kafka → Switchboard → 2xx at a fast local receiver.

Measured in one run, on loopback, against a reference measured in the same run: the raw rate
of the same aiohttp client sending the same signed requests to the same receiver, without
Kafka. Each figure is the median of --repeats runs; the machine is shared and noisy, so the
ratio to the reference is the figure to compare across machines. The same comparison in CPU
is reported beside it: the raw client's CPU per request over the service's per delivery,
which what else runs on the machine moves less than it moves rates.

    .venv/bin/python -m bench.e2e [--events 50000] [--repeats 5] [--loops uvloop,asyncio]
                                  [--shapes default,template]

`--shapes template` adds runs whose subscription has a body template, a templated header and
a filter (docs/events.md): what request shaping costs, against the default envelope.
`--shapes tracing` adds runs with tracing on: spans exported over OTLP/HTTP (the standard
OTEL_EXPORTER_OTLP_ENDPOINT) to a second sink process that counts and discards them, every
span sampled (the events carry no trace context, so each starts a trace); `--shapes
tracing10` the same with `OTEL_TRACES_SAMPLER=traceidratio` at 0.1: one trace in ten kept.
`--baseline-tree DIR` adds runs with the service code of another checkout (e.g. `git worktree
add --detach DIR main`), interleaved with this one's: a change's cost measured against its base
in the same run. One baseline per requested shape of `default` (`baseline`) and `history`
(`baseline-history`, with its own store like a history run); `--baseline-shapes default`
gives only the default shape one (a checkout from before the history store).
`--shapes history` adds runs with the history store configured (an embedded PostgreSQL, a
fresh schema per run): the indexer runs in-process, and the run also reports how fast the
attempts were indexed (first delivery to the last attempt stored), beside the delivery rate.
`--shapes ordered` adds runs whose subscription is ordered per call (`"ordering": {"key":
"data.call.id"}`, docs/ordering.md) on the same events, each given one of 1,000 call ids at
`data.call.id` (added where the event has no call) and produced keyed by it, so that a call's
events are in one partition, in order; the paced events of its latency phase likewise.
`--paced-rate 500 --fetch-wait-ms 500 --paced-seconds 20` runs the latency phase (and the raw
client's reference latency) at 500 events/s, every service run with the production fetch wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import asyncpg
import msgspec
import orjson
import uvloop
from aiokafka import AIOKafkaProducer

from bench.common import (
    RESULTS,
    cpu_seconds,
    create_topics,
    peak_rss_mib,
    percentile,
    produce,
    write_subscription,
)
from service.delivery.netguard import AddressPolicy
from service.delivery.signing import message_id, secret_key, sign
from service.events.envelope import decode_event
from service.subscriptions.model import SubscriptionCreate, new_subscription
from tools.postgres import EmbeddedPostgres, with_settings
from tools.tansu import TansuBroker, free_port
from tools.voice_events import EVENT_TYPES, cloud_event

CONCURRENCY = 64  # the raw client's workers and the subscription's max_in_flight
PARTITIONS = 3
PACED_RATE = 200  # events per second for the latency phase
PACED_SECONDS = 5.0  # how long the latency phase produces
# The service's fetch wait: the test broker holds every fetch to it (production's is 500).
FETCH_MAX_WAIT_MS = 20
ORDERED_KEYS = 1000  # distinct call ids of the ordered shape
TOKEN = "bench-admin-token-0123456789"
# The runs of --baseline-tree: the other checkout's service, in the shape of each of these.
BASELINES: Final = {"default": "baseline", "history": "baseline-history"}


class SinkClient:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.url = base + "/hook"

    async def wait_up(self) -> None:
        """Until the sink process answers (it is started just before), for up to 10 s."""
        for _ in range(100):
            try:
                await self.stats()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
            else:
                return

    async def reset(self) -> None:
        async with self.http.post(self.base + "/reset"):
            pass

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(self.base + "/stats") as r:
            data: dict[str, Any] = orjson.loads(await r.read())
            return data

    async def delays(self) -> list[float]:
        async with self.http.get(self.base + "/delays") as r:
            data: list[float] = orjson.loads(await r.read())
            return data

    async def wait_count(self, n: int, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            stats = await self.stats()
            if stats["count"] >= n or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Setup:
    bootstrap: str
    subs_topic: str
    sink: SinkClient
    values: list[bytes]
    key: bytes
    history_dsn: str | None = None
    # The OTLP/HTTP collector of the tracing runs (a bench.sink process).
    collector: str | None = None
    baseline_tree: str | None = None


# A realistic shaped subscription: a CRM body from event fields, a caller header, a filter.
SHAPED: dict[str, Any] = {  # "timestamp": the sink measures latency from it
    "body_template": {
        "event": "{{type}}", "account": "{{tenant_id}}", "timestamp": "{{timestamp}}",
        "agent": "{{data.agent.id}}", "phone": "{{data.contact.phoneNumber}}",
        "note": "{{type}} for {{data.contact.firstName}} via {{data.agent.name}}",
        "payload": "{{data}}",
    },
    "headers": {"X-Event-Type": "{{type}}"},
    "filters": [{"path": "tenant_id", "op": "eq", "value": "bench"}],
}  # fmt: skip


def signed_headers(key: bytes, msg_id: str, body: bytes) -> dict[str, str]:
    ts = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": "switchboard/bench",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, msg_id, ts, body),
    }


def webhook_body(value: bytes) -> tuple[str, bytes]:
    event = decode_event(value, [], record_timestamp_ms=0, max_bytes=1 << 20)
    return message_id("sub_bench", event.id), event.webhook_body()


async def raw_rate(setup: Setup) -> tuple[float, float]:
    """The reference: the same client, headers, signing and concurrency, without Kafka. Its
    rate, and the CPU this process spent per 1000 requests (signing them included)."""
    sink = setup.sink
    await sink.reset()
    bodies = iter([webhook_body(v) for v in setup.values])
    cpu0 = time.process_time()
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=10, connect=5)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:

        async def worker() -> None:
            for msg_id, body in bodies:
                headers = signed_headers(setup.key, msg_id, body)
                async with http.post(
                    sink.url, data=body, headers=headers, allow_redirects=False, timeout=timeout
                ) as resp:
                    await resp.content.read(4096)
                    assert resp.status == 204

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    cpu_ms_per_1000 = 1_000_000 * (time.process_time() - cpu0) / len(setup.values)
    stats = await sink.stats()
    return float((stats["count"] - 1) / (stats["last"] - stats["first"])), cpu_ms_per_1000


async def raw_latency(setup: Setup) -> tuple[float, float]:
    """The reference latency: the same paced rate, the event stamped just before sending."""
    rng = random.Random(4)
    await setup.sink.reset()
    async with aiohttp.ClientSession(trust_env=False) as http:
        started, sent = time.monotonic(), 0
        while time.monotonic() - started < PACED_SECONDS:
            msg_id, body = webhook_body(cloud_event(rng.choice(EVENT_TYPES), "bench", rng))
            headers = signed_headers(setup.key, msg_id, body)
            async with http.post(setup.sink.url, data=body, headers=headers) as resp:
                await resp.read()
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / PACED_RATE - time.monotonic()))
    delays = await setup.sink.delays()
    return 1000 * percentile(delays, 0.5), 1000 * percentile(delays, 0.99)


async def produce_paced(
    bootstrap: str, topic: str, seconds: float, *, ordered: bool = False
) -> int:
    """Events at PACED_RATE for `seconds`; `ordered`: each with a call id, keyed by it."""
    rng = random.Random(3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    sent = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            value = cloud_event(rng.choice(EVENT_TYPES), "bench", rng)
            if ordered:
                key, value = with_call_id(value, rng.randrange(ORDERED_KEYS))
                await producer.send(topic, value, key=key)
            else:
                await producer.send(topic, value)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / PACED_RATE - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def with_call_id(value: bytes, call: int) -> tuple[bytes, bytes]:
    """The event with call number `call`'s id at data.call.id (a `call` added where the event
    has none: a contact or campaign event of that call), and that id as the record key."""
    event = orjson.loads(value)
    call_id = f"call_{call:016x}"
    event["data"]["call"] = {**event["data"].get("call", {}), "id": call_id}
    return call_id.encode(), orjson.dumps(event)


def ordered_events(values: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The ordered shape's backlog: the same events, spread over ORDERED_KEYS calls."""
    rng = random.Random(5)
    return [with_call_id(value, rng.randrange(ORDERED_KEYS)) for value in values]


async def produce_backlog(setup: Setup, topic: str, shape: str) -> None:
    """The run's events; for `ordered`, as bench.common.produce does, but each keyed by its
    call id (a call's events in one partition, in order)."""
    if shape != "ordered":
        await produce(setup.bootstrap, topic, setup.values)
        return
    producer = AIOKafkaProducer(
        bootstrap_servers=setup.bootstrap, enable_idempotence=False, linger_ms=20
    )
    await producer.start()
    try:
        for key, value in ordered_events(setup.values):
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def service_env(bootstrap: str, loop: str, topic: str, group: str, subs: str) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE": "false",
        # The test broker holds each fetch to this deadline even when data is waiting.
        "SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS": str(FETCH_MAX_WAIT_MS),
        "SWITCHBOARD_EVENT_TOPICS": topic,
        "SWITCHBOARD_GROUP_ID": group,
        "SWITCHBOARD_SUBSCRIPTIONS_TOPIC": subs,
        # Each run's own: a new group would otherwise read the earlier runs' deliveries again.
        "SWITCHBOARD_DELIVERIES_TOPIC": f"{group}.deliveries",
        "SWITCHBOARD_RETRY_TOPIC_PREFIX": f"{group}.retry",
        # Likewise: a key's state names the offset it took in the run's deliveries topic.
        "SWITCHBOARD_ORDERING_TOPIC": f"{group}.ordering",
        "SWITCHBOARD_PARKING_TOPIC": f"{group}.parked",
        "SWITCHBOARD_INVALID_TOPIC": "bench.invalid",
        "SWITCHBOARD_TOPIC_REPLICATION_FACTOR": "1",
        "SWITCHBOARD_HTTP_HOST": "127.0.0.1",
        "SWITCHBOARD_HTTP_PORT": str(free_port()),
        "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
        "SWITCHBOARD_ALLOW_PRIVATE_TARGETS": "true",
        "SWITCHBOARD_ALLOW_HTTP": "true",
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "SWITCHBOARD_EVENT_LOOP": loop,
    }


async def run_service(
    setup: Setup, loop: str, run: int, *, latency: bool, shape: str = "default"
) -> dict[str, float]:
    """Start the service on a backlog of events; measure its drain rate, then its latency."""
    sink, n = setup.sink, len(setup.values)
    topic = f"bench.events.{loop}.{shape}.{run}"
    await create_topics(setup.bootstrap, [(topic, PARTITIONS, {})])
    await produce_backlog(setup, topic, shape)  # drained at full speed
    await sink.reset()
    own_subs = shape not in ("default", "history", *BASELINES.values()) and not shape.startswith(
        "tracing"
    )
    subs = setup.subs_topic + ("." + shape if own_subs else "")
    env = service_env(setup.bootstrap, loop, topic, f"bench-{loop}-{shape}-{run}", subs)
    # Each run its own attempts topic, so an indexer reads only its run's attempts.
    env["SWITCHBOARD_ATTEMPTS_TOPIC"] = f"bench.attempts.{loop}.{shape}.{run}"
    otel = tracing_env(shape, setup.collector)
    env.update(otel)
    collector = otel.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    spans_before = await exported_spans(sink.http, collector) if collector else 0
    schema = None
    if shape in ("history", BASELINES["history"]):
        assert setup.history_dsn is not None
        schema = f"bench_{loop}_{run}_{uuid.uuid4().hex[:6]}"
        conn = await asyncpg.connect(setup.history_dsn)
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.close()
        env["SWITCHBOARD_HISTORY_DSN"] = with_settings(setup.history_dsn, search_path=schema)
    # `-m` imports from the working directory first: the baseline runs the other tree's code.
    cwd = setup.baseline_tree if shape in BASELINES.values() else None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", env=env, cwd=cwd
    )
    try:
        first = await sink.wait_count(1, within=60)
        cpu0, count0 = cpu_seconds(proc.pid), first["count"]
        stats = await sink.wait_count(n, within=600)
        cpu1 = cpu_seconds(proc.pid)
        if stats["count"] < n:
            raise RuntimeError(f"only {stats['count']} of {n} delivered")
        out = {
            "rate": (stats["count"] - 1) / (stats["last"] - stats["first"]),
            "cpu_ms_per_1000": 1_000_000 * (cpu1 - cpu0) / max(1, stats["count"] - count0),
            # From the process's start: the events stage's work before the first delivery
            # (its share varies with how long the delivery group takes to join) and start-up.
            "cpu_total_ms_per_1000": 1_000_000 * cpu1 / n,
        }
        if schema is not None:
            out["indexed_rate"] = await indexed_rate(env["SWITCHBOARD_HISTORY_DSN"], n, stats)
        sent = 0
        if latency:
            await sink.reset()
            sent = await produce_paced(
                setup.bootstrap, topic, seconds=PACED_SECONDS, ordered=shape == "ordered"
            )
            await sink.wait_count(sent, within=60)
            delays = await sink.delays()
            out["p50_ms"] = 1000 * percentile(delays, 0.50)
            out["p99_ms"] = 1000 * percentile(delays, 0.99)
        out["peak_rss_mib"] = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    if collector:
        # Read after the exit, which flushes the last batch.
        exported = await exported_spans(sink.http, collector) - spans_before
        out["spans_per_event"] = exported / (n + (sent if latency else 0))
    return out


def tracing_env(shape: str, collector: str | None) -> dict[str, str]:
    """The OTEL_* variables of a tracing run (none for the other shapes)."""
    if not shape.startswith("tracing"):
        return {}
    assert collector is not None
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_SERVICE_NAME": "switchboard-bench"}
    if shape == "tracing10":
        env.update(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")
    return env


async def exported_spans(http: aiohttp.ClientSession, collector: str) -> int:
    async with http.get(collector + "/traces") as r:
        return int(orjson.loads(await r.read())["spans"])


async def indexed_rate(dsn: str, n: int, stats: dict[str, Any]) -> float:
    """Attempts stored per second, from the first delivery to the n-th attempt stored."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(6000):
            if await conn.fetchval("SELECT count(*) FROM attempts") >= n:
                return float(n / (time.time() - stats["first"]))
            await asyncio.sleep(0.1)
        raise RuntimeError("the indexer did not store every attempt in 600 s")
    finally:
        await conn.close()


async def start_sink(slow_delay: float = 0.0) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sink",
        "--port",
        str(port),
        "--slow-delay",
        str(slow_delay),
    )
    return proc, f"http://127.0.0.1:{port}"


async def measure(
    args: argparse.Namespace, broker: TansuBroker, sink: SinkClient
) -> dict[str, Any]:
    rng = random.Random(1)
    values = [
        cloud_event(rng.choice(EVENT_TYPES), "bench", rng, f"evt_{uuid.uuid4().hex}")
        for _ in range(args.events)
    ]
    fields = {"tenant_id": "bench", "name": "bench", "url": sink.url, "event_types": ["*"],
              "max_in_flight": CONCURRENCY}  # fmt: skip
    sub = new_subscription(
        msgspec.convert(fields, SubscriptionCreate),
        AddressPolicy(allow_private=True, allow_http=True),
    )
    setup = Setup(broker.bootstrap, "bench.subscriptions", sink, values, secret_key(sub.secret),
                  history_dsn=args.history_dsn, collector=args.collector,
                  baseline_tree=args.baseline_tree)  # fmt: skip
    await write_subscription(broker.bootstrap, setup.subs_topic, sub)
    if "ordered" in args.shapes.split(","):
        ordered = new_subscription(
            msgspec.convert({**fields, "ordering": {"key": "data.call.id"}}, SubscriptionCreate),
            AddressPolicy(allow_private=True, allow_http=True),
        )
        await write_subscription(broker.bootstrap, setup.subs_topic + ".ordered", ordered)
    shaped = new_subscription(
        msgspec.convert({**fields, **SHAPED}, SubscriptionCreate),
        AddressPolicy(allow_private=True, allow_http=True),
    )
    await write_subscription(broker.bootstrap, setup.subs_topic + ".template", shaped)
    shapes = args.shapes.split(",")
    if args.baseline_tree:
        based = args.baseline_shapes.split(",") if args.baseline_shapes else shapes
        shapes += [BASELINES[s] for s in shapes if s in BASELINES and s in based]
    loops = [
        loop if shape == "default" else f"{loop}/{shape}"
        for loop in args.loops.split(",")
        for shape in shapes
    ]
    raw: list[float] = []
    raw_cpu: list[float] = []
    runs: dict[str, list[dict[str, float]]] = {loop: [] for loop in loops}
    # Interleaved, so that a noisy spell of the shared machine hits the reference and the
    # service alike; each service run is compared with the reference run just before it.
    for i in range(args.repeats):
        rate, cpu = await raw_rate(setup)
        raw.append(rate)
        raw_cpu.append(cpu)
        for config in loops:
            loop, _, shape = config.partition("/")
            run = await run_service(
                setup, loop, i, latency=i == args.repeats - 1, shape=shape or "default"
            )
            run["ratio"] = run["rate"] / raw[-1]
            # The same comparison in CPU: less moved than rates by what else runs beside.
            run["cpu_ratio"] = raw_cpu[-1] / run["cpu_ms_per_1000"]
            runs[config].append(run)
    raw_p50, raw_p99 = await raw_latency(setup)
    result: dict[str, Any] = {
        "events": args.events,
        "repeats": args.repeats,
        "concurrency": CONCURRENCY,
        "paced_rate": PACED_RATE,
        "paced_seconds": PACED_SECONDS,
        "fetch_wait_ms": FETCH_MAX_WAIT_MS,
        "raw_rate_median": statistics.median(raw),
        "raw_rates": raw,
        "raw_cpu_ms_per_1000_median": statistics.median(raw_cpu),
        "raw_cpu_ms_per_1000": raw_cpu,
        "raw_p50_ms": raw_p50,
        "raw_p99_ms": raw_p99,
        "loops": {},
    }
    for loop in loops:
        rates = [r["rate"] for r in runs[loop]]
        result["loops"][loop] = {
            "rate_median": statistics.median(rates),
            "rates": rates,
            "ratios": [r["ratio"] for r in runs[loop]],
            "ratio_to_raw": statistics.median(r["ratio"] for r in runs[loop]),
            "cpu_ms_per_1000_median": statistics.median(r["cpu_ms_per_1000"] for r in runs[loop]),
            "cpu_ms_per_1000": [r["cpu_ms_per_1000"] for r in runs[loop]],
            "cpu_ratios": [r["cpu_ratio"] for r in runs[loop]],
            "cpu_ratio_to_raw": statistics.median(r["cpu_ratio"] for r in runs[loop]),
            "cpu_total_ms_per_1000_median": statistics.median(
                r["cpu_total_ms_per_1000"] for r in runs[loop]
            ),
            "peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs[loop]),
            "p50_ms": runs[loop][-1]["p50_ms"],
            "p99_ms": runs[loop][-1]["p99_ms"],
        }
        if "spans_per_event" in runs[loop][0]:
            result["loops"][loop]["spans_per_event"] = statistics.median(
                r["spans_per_event"] for r in runs[loop]
            )
        if "indexed_rate" in runs[loop][0]:
            result["loops"][loop]["indexed_rate_median"] = statistics.median(
                r["indexed_rate"] for r in runs[loop]
            )
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(TansuBroker())
        args.history_dsn = None
        if "history" in args.shapes.split(","):
            args.history_dsn = stack.enter_context(EmbeddedPostgres()).dsn
        procs = []
        sink_proc, sink_base = await start_sink()
        procs.append(sink_proc)
        args.collector = None
        try:
            async with aiohttp.ClientSession() as http:
                if any(shape.startswith("tracing") for shape in args.shapes.split(",")):
                    # Its own process: receiving spans does not slow the webhook receiver.
                    collector_proc, args.collector = await start_sink()
                    procs.append(collector_proc)
                    await SinkClient(http, args.collector).wait_up()
                sink = SinkClient(http, sink_base)
                await sink.wait_up()
                return await measure(args, broker, sink)
        finally:
            for proc in procs:
                proc.terminate()
                await proc.wait()


def report(res: dict[str, Any]) -> str:
    raw_runs = ", ".join(f"{r:.0f}" for r in res["raw_rates"])
    lines = [
        f"events {res['events']}, repeats {res['repeats']}, concurrency {res['concurrency']}",
        f"raw aiohttp client: {res['raw_rate_median']:.0f}/s (runs: {raw_runs}); "
        f"CPU {res['raw_cpu_ms_per_1000_median']:.0f} ms per 1000 requests",
        f"raw latency at {PACED_RATE}/s: p50 {res['raw_p50_ms']:.1f} ms, "
        f"p99 {res['raw_p99_ms']:.1f} ms",
    ]
    for loop, r in res["loops"].items():
        pairs = zip(r["rates"], r["ratios"], strict=True)
        runs = ", ".join(f"{x:.0f}/s ({100 * q:.0f}%)" for x, q in pairs)
        lines.append(
            f"switchboard [{loop}]: median {r['rate_median']:.0f}/s, median ratio to raw "
            f"{100 * r['ratio_to_raw']:.0f}% (runs: {runs}); "
            f"CPU {r['cpu_ms_per_1000_median']:.0f} ms per 1000 deliveries "
            f"({r['cpu_total_ms_per_1000_median']:.0f} from the process's start; "
            f"raw's per request over it, median of pairs: {100 * r['cpu_ratio_to_raw']:.0f}%); "
            f"peak RSS {r['peak_rss_mib_max']:.0f} MiB; latency at {PACED_RATE}/s "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
            + (f"; indexed {r['indexed_rate_median']:.0f}/s" if "indexed_rate_median" in r else "")
            + (
                f"; {r['spans_per_event']:.2f} spans exported per event"
                if "spans_per_event" in r
                else ""
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument(
        "--shapes", default="default", help="default,template,history,tracing,tracing10,ordered"
    )
    parser.add_argument("--baseline-tree", help="another checkout, run as the shape baseline")
    parser.add_argument(
        "--baseline-shapes", help="the shapes given a baseline run (default: all of --shapes)"
    )
    parser.add_argument("--paced-rate", type=int, default=PACED_RATE, help="events/s, latency")
    parser.add_argument("--paced-seconds", type=float, default=PACED_SECONDS)
    parser.add_argument("--fetch-wait-ms", type=int, default=FETCH_MAX_WAIT_MS,
                        help="the service's KAFKA_FETCH_MAX_WAIT_MS (production: 500)")  # fmt: skip
    args = parser.parse_args()
    # Module settings, read by the latency phases, the service's environment and the report.
    PACED_RATE, PACED_SECONDS = args.paced_rate, args.paced_seconds
    FETCH_MAX_WAIT_MS = args.fetch_wait_ms
    result = uvloop.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"e2e-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(report(result))
