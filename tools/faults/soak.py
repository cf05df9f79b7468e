"""The soak: a steady mixed load for a long time, the service's resources sampled every 10 s.

    .venv/bin/python -m tools.faults.soak --minutes 35      # make soak DURATION=35 (minutes)

One replica (a process, default settings but a short retry schedule, so that a dead
endpoint's deliveries reach their dead letters within minutes and the retry topics reach a
steady depth), a history store, and five endpoints: two healthy, one flaky (a third of its
requests answered 503), one slow (2 s per answer), one dead (nothing listens on its port);
events of every catalogued type at --rate per second, and a pre-call lookup every second.
Every 10 s, from the replica's /metrics: resident memory, open descriptors, asyncio tasks,
the depth of the retry topics and the commit lag of the event topic and of the deliveries
topic (records between the committed offset and the end). Writes the samples (JSON lines),
a summary and a plot (PNG) to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import aiohttp

from tools.faults.fleet import Replica, create_subscription
from tools.faults.load import Endpoints, EventStream, LookupCaller
from tools.faults.soak_figures import summarize, write_plot
from tools.postgres import EmbeddedPostgres
from tools.receiver import wait_until
from tools.service_env import create_topic, service_env
from tools.tansu import TansuBroker, free_port
from tools.voice_events import EVENT_TYPES

SAMPLE_EVERY: Final = 10.0
PARTITIONS: Final = 3
# Waits short enough that a dead endpoint's deliveries are dead letters after ~2 minutes.
RETRY_SCHEDULE: Final = "1,5,30,60"


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mib: float
    open_fds: float
    tasks: float
    retry_depth: float
    commit_lag: float  # the event topic's
    delivery_lag: float  # the deliveries topic's (what the delivery stage has yet to finish)
    delivered: float  # successful attempts so far
    sent: int


def _sum(samples: dict[str, float], name: str, label: str = "") -> float:
    return sum(v for k, v in samples.items() if k.startswith(name + "{") and label in k)


async def _sample(
    replica: Replica, http: aiohttp.ClientSession, started: float, sent: int, env: dict[str, str]
) -> Sample:
    topic, retry = env["SWITCHBOARD_EVENT_TOPICS"], env["SWITCHBOARD_RETRY_TOPIC_PREFIX"]
    deliveries = env["SWITCHBOARD_DELIVERIES_TOPIC"]
    m = await replica.metrics(http)
    return Sample(
        t=round(time.monotonic() - started, 1),
        rss_mib=m["process_resident_memory_bytes"] / 2**20,
        open_fds=m["process_open_fds"],
        tasks=m["switchboard_asyncio_tasks"],
        retry_depth=_sum(m, "switchboard_consumer_lag", f'topic="{retry}.'),
        commit_lag=_sum(m, "switchboard_consumer_lag", f'topic="{topic}"'),
        delivery_lag=_sum(m, "switchboard_consumer_lag", f'topic="{deliveries}"'),
        delivered=_sum(m, "switchboard_delivery_attempts_total", 'outcome="success"'),
        sent=sent,
    )


async def soak(minutes: float, rate: float, out: Path) -> dict[str, object]:
    logs = out / "logs"
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    with (logs / "tansu.log").open("wb") as tansu_log, TansuBroker(log=tansu_log) as broker, \
            EmbeddedPostgres() as pg:  # fmt: skip
        env = service_env(
            broker.bootstrap, retry_schedule=RETRY_SCHEDULE, log_level="warning",
            history_dsn=pg.dsn, circuit_min_calls=20, kafka_session_timeout_ms=10_000,
        )  # fmt: skip
        topic = env["SWITCHBOARD_EVENT_TOPICS"]
        await create_topic(broker.bootstrap, topic, PARTITIONS)
        await create_topic(broker.bootstrap, topic + ".replies", 1)
        endpoints = Endpoints()
        await endpoints.start()
        replica = Replica("soak", env, logs)
        replica.start()
        try:
            await replica.wait_ready()
            # The oldest matching subscription answers a lookup: this one, made first.
            endpoints.add("who")
            await create_subscription(replica.port, tenant_id="acme", name="who",
                                      url=endpoints.url("who"), event_types=["call.inbound"],
                                      body_template={"number": "{{data.call.from}}"})  # fmt: skip
            # The slow endpoint gets enough concurrency for the rate (2 s x 20/s = 40 at once):
            # slow, not overloaded, so its backlog stays bounded.
            for name, options in (("healthy-a", {}), ("healthy-b", {}), ("flaky", {"flaky": 0.33}),
                                  ("slow", {"delay": 2.0})):  # fmt: skip
                endpoints.add(name, **options)
                await create_subscription(replica.port, tenant_id="acme", name=name,
                                          url=endpoints.url(name), event_types=["*"],
                                          max_in_flight=100)  # fmt: skip
            await create_subscription(replica.port, tenant_id="acme", name="dead",
                                      url=f"http://127.0.0.1:{free_port()}/dead",
                                      event_types=["*"], timeout_seconds=2)  # fmt: skip
            stream = EventStream(broker.bootstrap, topic, rate,
                                 types=[t for t in EVENT_TYPES if t != "call.inbound"])  # fmt: skip
            lookups = LookupCaller(broker.bootstrap, topic, topic + ".replies", every=1.0)
            return await _run(
                minutes, rate, replica=replica, stream=stream, lookups=lookups,
                endpoints=endpoints, env=env, out=out,
            )  # fmt: skip
        finally:
            replica.ensure_stopped()
            await endpoints.close()


async def _run(
    minutes: float,
    rate: float,
    *,
    replica: Replica,
    stream: EventStream,
    lookups: LookupCaller,
    endpoints: Endpoints,
    env: dict[str, str],
    out: Path,
) -> dict[str, object]:
    samples: list[Sample] = []
    async with aiohttp.ClientSession() as http:
        await lookups.start()
        stream.start()
        started = time.monotonic()
        with (out / "samples.jsonl").open("w") as f:
            while time.monotonic() - started < minutes * 60:
                await asyncio.sleep(SAMPLE_EVERY)
                replica.check_alive()
                if replica.unexpected_exits:
                    break
                sample = await _sample(replica, http, started, len(stream.sent), env)
                samples.append(sample)
                f.write(json.dumps(asdict(sample)) + "\n")
                f.flush()
        await stream.stop()
        result = await lookups.stop()
        healthy = endpoints.paths["healthy-a"]
        # The stream has stopped: what the healthy endpoints still miss after a minute is lost.
        await wait_until(lambda: stream.sent.keys() <= healthy.answered.keys(), 60, 0.5)
    summary = summarize(samples)
    summary.update(
        minutes=minutes, rate=rate, events_sent=len(stream.sent),
        healthy_delivered=len(stream.sent.keys() & healthy.answered.keys()),
        healthy_duplicates=healthy.duplicates, replica_exits=replica.unexpected_exits,
        lookups_sent=result.sent, lookup_replies=dict(result.replies),
        lookups_unanswered=result.unanswered, lookups_late=result.late,
        lookups_missing=result.missing,
    )  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_plot(samples, out / "soak.png", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=35)
    parser.add_argument("--rate", type=float, default=20, help="events per second")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    args = parser.parse_args()
    summary = asyncio.run(soak(args.minutes, args.rate, args.out))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
