"""The composition root: build the parts, start them in order, run until SIGTERM, drain, stop.

The HTTP server starts first so that probes answer while Kafka is still being reached:
liveness says the process is alive, readiness says why it is not ready yet. Gauges computed
at scrape time are bound here, once, to the parts that know their values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import signal
from typing import Final

import asyncpg
import structlog
from aiohttp import web
from aiokafka.errors import KafkaConnectionError, KafkaError

from consumers.attempt_log.publisher import AttemptPublisher
from consumers.dead_letters.store import DeadLetterStore
from consumers.deliveries.handler import DeliveryHandler, OrderingSetup
from consumers.deliveries.parking import Parking
from consumers.deliveries.partition_reader import OffsetReader, read_ordering_keys, read_parked
from consumers.engine.clients import new_group_consumer, new_producer, stop_within
from consumers.engine.group_loop import POLL_TIMEOUT_MS, GroupLoop, LoopSettings
from consumers.engine.resting import Resting, may_rest
from consumers.engine.topics import TopicLayoutError, ensure_topics
from consumers.events.handler import EventHandler
from consumers.events.handoff import Handoff
from consumers.events.quarantine import Quarantine
from consumers.history.indexer import Indexer
from consumers.lookups.handler import LookupHandler
from consumers.lookups.reader import OwnedPartitions
from consumers.subscriptions.table import SubscriptionTable
from service import __version__
from service.admin.server import AdminApi
from service.catalog.correlation import Correlation
from service.config import Settings
from service.delivery.circuit import State
from service.delivery.netguard import AddressPolicy
from service.delivery.pool import DeliveryPool
from service.delivery.sender import Sender
from service.history.migrations import migrate
from service.history.store import HistoryStore
from service.observability import metrics
from service.observability.tracing import start_tracing
from service.ordering.control import OrderingControl
from service.retries.followup import KafkaFollowup
from service.retries.health import EndpointHealth
from service.retries.ops import OpsEvents
from service.retries.policy import RetrySchedule
from service.routing.router import Router
from service.subscriptions.model import Subscription
from service.subscriptions.secretbox import SecretBox

log = structlog.get_logger("switchboard")

# Kafka unreachable at start is retried with this backoff cap: a pod that waits for its
# brokers is better than one in CrashLoopBackOff whose restarts hide the real error.
_MAX_CONNECT_BACKOFF: Final = 30.0
# After SIGTERM the loops get their drain grace plus this for their final commit; past it
# (the brokers gone, a commit waiting for a coordinator that never comes) they are cancelled,
# so that the process exits well within Kubernetes' termination grace period.
_STOP_MARGIN_SECONDS: Final = 10.0
# The indexer's records in flight: each holds up to 100 attempts, so this bounds what waits in
# memory while the store is away (about 20,000 attempts, a few MiB), not the events' cap.
HISTORY_RECORDS_IN_FLIGHT: Final = 200
IDEMPOTENCE_FIX: Final = (
    "if they do not support idempotent producers, set SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE=false"
)


class Switchboard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = AddressPolicy(
            allow_private=settings.allow_private_targets,
            allowed=[ipaddress.ip_network(n) for n in settings.allowed_networks],
            allow_http=settings.allow_http,
        )
        self.router = Router()
        # Its own tracer provider (never the process-wide one); None when tracing is off.
        self.tracing = start_tracing(settings.tracing)
        self.producer = new_producer(settings)
        self.table = SubscriptionTable(settings, self.producer, SecretBox(settings.secrets_key))
        self.table.add_listener(self._on_subscription)
        self.schedule = RetrySchedule(
            settings.retry_schedule, topic_prefix=settings.retry_topic_prefix
        )
        self.ops = OpsEvents(self.producer, settings.ops_topic)
        followup = KafkaFollowup(
            settings,
            producer=self.producer,
            schedule=self.schedule,
            health=EndpointHealth(self.table, self.ops),
            ops=self.ops,
            tracing=self.tracing,
        )
        self.attempt_log = AttemptPublisher(self.producer, settings.attempts_topic)
        self.history = (
            HistoryStore(settings.history_dsn, settings.history_retention_days)
            if settings.history_dsn
            else None
        )
        self.sender = Sender(
            policy=self.policy,
            max_connections=settings.http_max_connections,
            body_cap=settings.response_body_cap_bytes,
            egress_proxy=settings.egress_proxy,
            dns_cache_seconds=settings.dns_cache_seconds,
        )
        self.pool = DeliveryPool(
            sender=self.sender,
            policy=self.policy,
            find=self.table.get,
            circuit=settings,
            followup=followup,
            attempt_sink=self.attempt_log,
            correlate=Correlation(settings.correlation_paths),
            log_successes=settings.log_level == "debug",
            tracing=self.tracing,
        )
        self.dead_letters = (
            DeadLetterStore(
                self.history,
                self.producer,
                replay_topic=self.schedule.topic(self.schedule.tiers[0]),
            )
            if self.history is not None
            else None
        )
        quarantine = Quarantine(self.producer, settings.invalid_topic)
        loop_settings = LoopSettings(
            max_records_in_flight=settings.max_records_in_flight,
            commit_interval_seconds=settings.commit_interval_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            rebalance_grace_seconds=settings.rebalance_grace_seconds,
            fence_after_seconds=settings.kafka_session_timeout_ms / 1000,
        )
        lookups = LookupHandler(
            deadline_seconds=settings.lookup_deadline_seconds,
            router=self.router,
            pool=self.pool,
            producer=self.producer,
            tracing=self.tracing,
        )
        events = functools.partial(
            EventHandler,
            settings,
            router=self.router,
            handoff=Handoff(self.producer, settings.deliveries_topic, self.tracing),
            followup=followup,
            quarantine=quarantine,
            decisions=self.attempt_log,
            lookups=lookups,
            tracing=self.tracing,
        )
        self.events = GroupLoop(
            functools.partial(new_group_consumer, settings, settings.group_id),
            events(),
            loop_settings,
            topics=list(settings.event_topics),
            role="events",
        )
        # Reads parked deliveries back by offset (consumers/deliveries/parking.py).
        self.parked_reader = OffsetReader(settings, settings.parking_topic)
        self.ordering_reader = OffsetReader(settings, settings.ordering_topic)
        self.delivery_handler = deliveries = DeliveryHandler(
            schedule=self.schedule,
            pool=self.pool,
            find=self.table.get,
            quarantine=quarantine,
            tracing=self.tracing,
            parking=Parking(
                producer=self.producer,
                topic=settings.parking_topic,
                load=functools.partial(read_parked, settings),
                read_at=self.parked_reader.read,
            ),
            ordering=OrderingSetup(
                producer=self.producer,
                topic=settings.ordering_topic,
                deliveries_topic=settings.deliveries_topic,
                load=functools.partial(read_ordering_keys, settings),
                read_at=self.ordering_reader.read,
                idle_seconds=settings.ordering_key_idle_seconds,
            ),
        )
        # The tiers whose records are never due before the next look rest while idle.
        wait_ms = settings.kafka_fetch_max_wait_ms
        # The group keeps the id it had when it read the retry tiers alone, so that an upgrade
        # goes on from the tiers' committed offsets instead of reading them again.
        self.deliveries = GroupLoop(
            functools.partial(
                new_group_consumer, settings, f"{settings.group_id}.retry", co_partitioned=True
            ),
            deliveries,
            loop_settings,
            topics=[settings.deliveries_topic, *self.schedule.topics()],
            role="deliveries",
            resting=Resting(
                self.schedule.topic(t)
                for t in self.schedule.tiers
                if may_rest(self.schedule.earliest_due(t), wait_ms, POLL_TIMEOUT_MS)
            ),
        )
        self.loops: tuple[GroupLoop, ...] = (self.events, self.deliveries)
        if settings.lookup_topics:
            # Read without a consumer group (consumers/lookups/reader.py), so never held by a
            # rebalance. A partition that moves is read again by its new owner from the last
            # reported position: the old owner's requests in flight are given up at once
            # rather than hold the partitions it keeps for their grace period.
            lookup_loop = GroupLoop(
                functools.partial(OwnedPartitions, settings, self.producer),
                events(lookups_only=True),
                dataclasses.replace(
                    loop_settings, rebalance_grace_seconds=0.0, fence_after_seconds=None
                ),
                topics=list(settings.lookup_topics),
                role="lookups",
            )
            self.loops = (*self.loops, lookup_loop)
        self.indexer: Indexer | None = None
        if self.history is not None:
            # Its own group: every record indexed once per fleet, and its own loop: a store
            # that is away holds back the indexer only, never a delivery.
            self.indexer = Indexer(
                self.history,
                attempts_topic=settings.attempts_topic,
                dead_letter_topic=settings.dead_letter_topic,
            )
            history_loop = GroupLoop(
                functools.partial(
                    new_group_consumer, settings, f"{settings.group_id}.history", read_model=True
                ),
                self.indexer,
                dataclasses.replace(loop_settings, max_records_in_flight=HISTORY_RECORDS_IN_FLIGHT),
                topics=[settings.attempts_topic, settings.dead_letter_topic],
                role="history",
            )
            self.loops = (*self.loops, history_loop)
        self.api = AdminApi(
            table=self.table,
            dead_letters=self.dead_letters,
            token=settings.admin_token,
            policy=self.policy,
            loops=self.loops,
            history=self.history,
            tester=self.pool,
            settings=settings,
            ordering=OrderingControl(self.producer, settings.deliveries_topic),
        )
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self.port: int | None = None
        self.failed = False
        self._bind_gauges()

    def _bind_gauges(self) -> None:
        """Gauges read when /metrics is scraped rather than updated on every delivery."""
        metrics.DELIVERIES_IN_FLIGHT.set_function(lambda: self.pool.in_flight)
        for state in State:
            metrics.CIRCUITS.labels(state.value).set_function(
                functools.partial(self.pool.circuits_in, state)
            )
        for loop in self.loops:
            metrics.RECORDS_IN_FLIGHT.labels(loop.role).set_function(
                functools.partial(_records_in_flight, loop)
            )
        metrics.READY.set_function(lambda: 0 if self.api.not_ready() else 1)
        # Read on the loop (the scrape is an HTTP handler), so the running loop's own tasks.
        metrics.ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks()))
        if self.indexer is not None:
            metrics.HISTORY_INDEXER_LAG.set_function(self.indexer.lag_seconds)

    def _on_subscription(self, sub_id: str, sub: Subscription | None) -> None:
        if sub is None:
            self.router.remove(sub_id)
            self.pool.forget(sub_id)
        else:
            self.router.upsert(sub)

    def request_stop(self) -> None:
        self._stop.set()
        self.api.shutting_down = True
        for loop in self.loops:
            loop.stop()

    async def run(self) -> None:
        log.info("starting", version=__version__, settings=self.settings.masked())
        self._runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("http_listening", port=self.port)
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._connect():
                return
            await self.sender.start()
            self.attempt_log.start()
            reader = asyncio.create_task(self.table.run(), name="SubscriptionTable")
            reader.add_done_callback(self._on_reader_done)
            tasks.append(reader)
            if self.history is not None:
                tasks.append(asyncio.create_task(self.history.run(), name="history"))
            await _first(self.table.loaded.wait(), self._stop.wait())
            if self._stop.is_set():
                return
            for loop in self.loops:
                await loop.start()
            loops = [asyncio.create_task(loop.run(), name=loop.role) for loop in self.loops]
            tasks.extend(loops)
            tasks.append(asyncio.create_task(self._cancel_if_stuck(loops), name="watchdog"))
            tasks.append(asyncio.create_task(self._log_ready(), name="ready"))
            # The loops return after SIGTERM and their drain; if one dies, the process stops.
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    error = task.exception()
                    log.error("loop_failed", loop=task.get_name(), error=repr(error),
                              exc_info=error)  # fmt: skip
                    self.failed = True
                    self.request_stop()
            await asyncio.gather(*loops, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.ops.close()
            await self.attempt_log.close()
            await self.table.stop()
            if self.indexer is not None:
                await self.indexer.close()
            if self.history is not None:
                await self.history.close()
            await stop_within(self.producer.stop(), "producer")
            await asyncio.gather(
                self.delivery_handler.close(),
                self.parked_reader.close(),
                self.ordering_reader.close(),
            )
            await self.pool.close()
            await self.sender.close()
            if self.tracing is not None:
                await self.tracing.close()  # the last spans, within a bounded time
            await self._runner.cleanup()
            log.info("stopped")

    async def _log_ready(self) -> None:
        await asyncio.gather(*(loop.joined.wait() for loop in self.loops))
        log.info("ready")

    async def _cancel_if_stuck(self, loops: list[asyncio.Task[None]]) -> None:
        await self._stop.wait()
        await asyncio.sleep(self.settings.shutdown_grace_seconds + _STOP_MARGIN_SECONDS)
        stuck = [t.get_name() for t in loops if not t.done()]
        if stuck:
            log.warning("shutdown_forced", loops=stuck)
            for task in loops:
                task.cancel()

    def _on_reader_done(self, task: asyncio.Task[None]) -> None:
        # The reader runs for the life of the process; if it ends, this replica would route
        # with a table that no longer follows the topic. Stop, and let the platform restart us.
        if task.cancelled() or self._stop.is_set():
            return
        log.error("reader_stopped", reader=task.get_name(), error=repr(task.exception()))
        self.failed = True
        self.request_stop()

    async def _connect(self) -> bool:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await ensure_topics(self.settings, self.schedule.topics())
                await self._start_producer()
                await self.table.start()
            except (KafkaError, OSError, TopicLayoutError) as exc:
                if isinstance(exc, TopicLayoutError):
                    # A layout an operator must fix: said as it is, and kept in /readyz.
                    log.error("topics_not_co_partitioned", problem=str(exc), retry_in=backoff)  # noqa: TRY400
                    self.api.kafka_problem = str(exc)
                else:
                    log.warning("kafka_unavailable", error=repr(exc), retry_in=backoff)
                await _first(asyncio.sleep(backoff), self._stop.wait())
                backoff = min(backoff * 2, _MAX_CONNECT_BACKOFF)
                continue
            self.api.kafka_problem = None
            return True
        return False

    async def _start_producer(self) -> None:
        try:
            await self.producer.start()
        except KafkaConnectionError:
            raise
        except KafkaError as exc:
            # The brokers answer (the topics were just checked), yet refuse the producer: with
            # idempotence on, that is a broker without idempotent producers, which says only
            # UnknownError. Said once, with the fix; retrying goes on in case it is transient.
            if not self.settings.kafka_enable_idempotence:
                raise
            if self.api.kafka_problem is None:
                # A broker's answer, not a bug of ours: no traceback.
                log.error("kafka_idempotence_refused", error=repr(exc), fix=IDEMPOTENCE_FIX)  # noqa: TRY400
            self.api.kafka_problem = (
                f"the brokers refused an idempotent producer: {IDEMPOTENCE_FIX}"
            )
            raise


def _records_in_flight(loop: GroupLoop) -> int:
    return loop.records_in_flight


async def _first(*aws: object) -> None:
    """Wait until the first of several coroutines finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def reseal_secrets(settings: Settings) -> int:
    """Write every subscription again, sealed with the first SECRETS_KEY: the last step of a
    key rotation (docs/security.md). Returns how many were written."""
    producer = new_producer(settings)
    table = SubscriptionTable(settings, producer, SecretBox(settings.secrets_key))
    await producer.start()
    try:
        await table.start()
        reader = asyncio.create_task(table.run())
        try:
            await table.loaded.wait()
            count = await table.reseal_all()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        log.info("secrets_resealed", subscriptions=count)
        return count
    finally:
        await table.stop()
        await producer.stop()


async def migrate_history(settings: Settings) -> list[int]:
    """Apply the history store's migrations (`switchboard migrate`); the versions applied."""
    if not settings.history_dsn:
        raise ValueError("SWITCHBOARD_HISTORY_DSN is not set")
    conn = await asyncpg.connect(settings.history_dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def serve(settings: Settings) -> int:
    """Run until SIGTERM; the exit code: 0 after a clean drain, 1 if a part failed."""
    app = Switchboard(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    await app.run()
    return 1 if app.failed else 0
