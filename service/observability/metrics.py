"""Every metric the service exports, in one place.

Labels stay low-cardinality: outcome classes, status classes, reasons, topic and partition
(bounded by the topics' partition counts). Never a URL, a subscription id or a tenant.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY: Final = CollectorRegistry(auto_describe=True)
# process_cpu_seconds_total, process_resident_memory_bytes, ...: per-pod CPU and memory in the
# dashboard without depending on the cluster's cAdvisor scrape.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Webhook latencies span a fast CRM (tens of ms) to a receiver at its 10 s timeout.
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# End to end includes queueing behind rate limits and retries, which span up to a day or more.
_E2E_BUCKETS: Final = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86_400,
)  # fmt: skip

EVENTS_CONSUMED: Final = Counter(
    "switchboard_events_consumed",
    "Records read from the event topics and the retry topics.",
    ["topic"],
    registry=REGISTRY,
)
EVENTS_INVALID: Final = Counter(
    "switchboard_events_invalid",
    "Records that were not valid events and went to the quarantine topic.",
    ["reason"],
    registry=REGISTRY,
)
EVENTS_UNROUTED: Final = Counter(
    "switchboard_events_unrouted",
    "Valid events that matched no enabled subscription of their tenant.",
    registry=REGISTRY,
)
DELIVERY_ATTEMPTS: Final = Counter(
    "switchboard_delivery_attempts",
    "HTTP delivery attempts by outcome class and response status class.",
    ["outcome", "status_class"],
    registry=REGISTRY,
)
DELIVERIES: Final = Counter(
    "switchboard_deliveries",
    "Deliveries (one event to one subscription) by final result: delivered or dead_lettered.",
    ["result"],
    registry=REGISTRY,
)
RETRIES_SCHEDULED: Final = Counter(
    "switchboard_retries_scheduled",
    "Deliveries handed to a retry tier, by tier and cause: failure (an attempt failed) or "
    "circuit_open (put off without an attempt).",
    ["tier", "cause"],
    registry=REGISTRY,
)
DEAD_LETTERS: Final = Counter(
    "switchboard_dead_letters",
    "Deliveries written to the dead-letter topic, by reason.",
    ["reason"],
    registry=REGISTRY,
)
RETRY_OLDEST_PENDING_AGE: Final = Gauge(
    "switchboard_retry_oldest_pending_age_seconds",
    "Per retry tier, how long the oldest record read and not finished has been in the tier.",
    ["tier"],
    registry=REGISTRY,
)
RETRY_OVERDUE: Final = Gauge(
    "switchboard_retry_overdue_seconds",
    "Per retry tier, how far past its due time the oldest unfinished record is (0 if none).",
    ["tier"],
    registry=REGISTRY,
)
PARTITIONS_HELD_FOR_ENDPOINT: Final = Counter(
    "switchboard_endpoint_backlog_holds_total",
    "Times the delivery stage paused a partition because the next record's endpoint had a "
    "horizon's worth of deliveries queued (its backlog stays in Kafka).",
    registry=REGISTRY,
)
DELIVERIES_PARKED: Final = Counter(
    "switchboard_deliveries_parked_total",
    "Deliveries parked in the parking topic because their endpoint was at its horizon and "
    "holding its partition would have let another endpoint there run dry.",
    registry=REGISTRY,
)
PARKED_DELIVERIES: Final = Gauge(
    "switchboard_parked_deliveries",
    "Deliveries parked in this replica's partitions of the parking topic, waiting for room "
    "at their endpoint.",
    registry=REGISTRY,
)
ORDERING_KEYS_WAITING: Final = Gauge(
    "switchboard_ordering_keys_waiting",
    "Ordering keys of this replica's partitions that wait: for a delivery in the retry "
    "tiers, or (after a dead letter, with after_dead_letter=hold) for an operator.",
    ["reason"],
    registry=REGISTRY,
)
ORDERING_HELD: Final = Gauge(
    "switchboard_ordering_held_deliveries",
    "Deliveries held back in the ordering topic behind an earlier delivery of their key.",
    registry=REGISTRY,
)
ORDERING_KEY_MISSING: Final = Counter(
    "switchboard_ordering_key_missing_total",
    "Deliveries to an ordered subscription whose event has no value at its ordering key's "
    "path: delivered unordered.",
    registry=REGISTRY,
)
CIRCUITS: Final = Gauge(
    "switchboard_circuits",
    "Endpoint circuit breakers known to this replica, by state.",
    ["state"],
    registry=REGISTRY,
)
OPS_EVENTS: Final = Counter(
    "switchboard_ops_events",
    "Operational events published (endpoint.failing, endpoint.disabled, ...), by type.",
    ["type"],
    registry=REGISTRY,
)
REPLAYS: Final = Counter(
    "switchboard_dead_letter_replays",
    "Dead letters re-enqueued by the admin API.",
    registry=REGISTRY,
)
DELIVERY_DURATION: Final = Histogram(
    "switchboard_delivery_duration_seconds",
    "Duration of one HTTP attempt, request start to response body read.",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
END_TO_END_LATENCY: Final = Histogram(
    "switchboard_end_to_end_latency_seconds",
    "Event time to the 2xx response of its delivery.",
    buckets=_E2E_BUCKETS,
    registry=REGISTRY,
)
DELIVERIES_IN_FLIGHT: Final = Gauge(
    "switchboard_deliveries_in_flight",
    "Deliveries queued for their endpoint (behind its concurrency cap or rate limit) or in an "
    "HTTP attempt.",
    registry=REGISTRY,
)
RECORDS_IN_FLIGHT: Final = Gauge(
    "switchboard_records_in_flight",
    "Consumed records not yet finished (bounded by max_records_in_flight), by consumer: "
    "events or retries.",
    ["consumer"],
    registry=REGISTRY,
)
PARTITIONS_PAUSED: Final = Gauge(
    "switchboard_partitions_paused",
    "Assigned partitions paused, for backpressure or (retries) until their head record is due.",
    ["consumer"],
    registry=REGISTRY,
)
PARTITIONS_RESTING: Final = Gauge(
    "switchboard_partitions_resting",
    "Assigned partitions left out of fetches while idle, looked at every few seconds (idle "
    "retry tiers).",
    ["consumer"],
    registry=REGISTRY,
)
LOOKUP_MEMBERS: Final = Gauge(
    "switchboard_lookup_members",
    "Live members answering lookups (SWITCHBOARD_LOOKUP_TOPICS), as this replica reads the "
    "lookup members topic: fewer than the replicas running means some are not heard from.",
    registry=REGISTRY,
)
PARTITIONS_ASSIGNED: Final = Gauge(
    "switchboard_partitions_assigned",
    "Partitions assigned to this replica, by consumer.",
    ["consumer"],
    registry=REGISTRY,
)
CONSUMER_LAG: Final = Gauge(
    "switchboard_consumer_lag",
    "Records between the committed offset and the end of the partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
OLDEST_INCOMPLETE_AGE: Final = Gauge(
    "switchboard_oldest_incomplete_record_age_seconds",
    "Age (since its Kafka timestamp) of the oldest record not yet finished, per partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
HANDLER_ERRORS: Final = Counter(
    "switchboard_handler_errors",
    "Records whose handling raised (a bug): logged with their coordinates and finished, so "
    "that their partition moves on. By consumer.",
    ["consumer"],
    registry=REGISTRY,
)
COMMITS: Final = Counter(
    "switchboard_commits",
    "Offset commits by result.",
    ["result"],
    registry=REGISTRY,
)
CONSUMER_FENCED: Final = Gauge(
    "switchboard_consumer_fenced",
    "1 while the consumer hands out no records: its commits have failed for the session "
    "timeout, so the group has given its partitions to others (consumers/engine/fence.py).",
    ["consumer"],
    registry=REGISTRY,
)
REBALANCES: Final = Counter(
    "switchboard_rebalances",
    "Partition revocations and assignments seen by this replica.",
    ["kind"],
    registry=REGISTRY,
)
SUBSCRIPTIONS: Final = Gauge(
    "switchboard_subscriptions",
    "Subscriptions held in memory, by state.",
    ["state"],
    registry=REGISTRY,
)
SUBSCRIPTION_RECORDS_INVALID: Final = Counter(
    "switchboard_subscription_records_invalid",
    "Records of the subscriptions topic that could not be read and were skipped.",
    registry=REGISTRY,
)
ASYNCIO_TASKS: Final = Gauge(
    "switchboard_asyncio_tasks",
    "Tasks alive on the service's event loop: flat under a steady load, so growth is a leak.",
    registry=REGISTRY,
)
READY: Final = Gauge(
    "switchboard_ready",
    "1 when this replica is ready: connected and subscriptions loaded.",
    registry=REGISTRY,
)
KAFKA_PRODUCE_ERRORS: Final = Counter(
    "switchboard_kafka_produce_errors",
    "Failed produce calls to internal topics, by topic role (quarantine, retry, dead_letter, "
    "ops, table); each is retried.",
    ["role"],
    registry=REGISTRY,
)
INTERNAL_RECORDS_INVALID: Final = Counter(
    "switchboard_internal_records_invalid",
    "Records of the internal topics that could not be read, by topic role; retry records are "
    "quarantined; dead-letter and attempts records (or an attempt's rows whose time no "
    "timestamp holds) are skipped by the history indexer.",
    ["role"],
    registry=REGISTRY,
)

EVENTS_FILTERED: Final = Counter(
    "switchboard_events_filtered",
    "Deliveries not made because a subscription's filters did not match (filter) or its "
    "strict schema validation refused the event (schema; those become dead letters).",
    ["reason"],
    registry=REGISTRY,
)
OAUTH_TOKEN_FETCHES: Final = Counter(
    "switchboard_oauth_token_fetches",
    "OAuth2 client-credentials token requests to endpoints' token URLs, by result.",
    ["result"],
    registry=REGISTRY,
)
ATTEMPT_LOG_RECORDS: Final = Counter(
    "switchboard_attempt_log_records",
    "Attempt records for the delivery log: produced, or dropped because the attempts "
    "topic was not accepting them and the buffer was full.",
    ["result"],
    registry=REGISTRY,
)
LOOKUPS: Final = Counter(
    "switchboard_lookups",
    "Pre-call lookups (request/reply) answered, by result: answered, timeout, error, "
    "rejected, no_subscription, expired.",
    ["result"],
    registry=REGISTRY,
)
LOOKUP_DURATION: Final = Histogram(
    "switchboard_lookup_duration_seconds",
    "From reading a lookup request to its reply being acknowledged by the broker.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
    registry=REGISTRY,
)

HISTORY_RECORDS_INDEXED: Final = Counter(
    "switchboard_history_records_indexed",
    "Rows the history indexer wrote to PostgreSQL, by kind (attempt, dead_letter, routing); "
    "attempts read again after a restart and already stored are not counted.",
    ["kind"],
    registry=REGISTRY,
)
HISTORY_INDEXER_LAG: Final = Gauge(
    "switchboard_history_indexer_lag_seconds",
    "Age (since its Kafka timestamp) of the oldest record the history indexer has read but "
    "the store has not acknowledged yet; 0 when it is caught up.",
    registry=REGISTRY,
)
HISTORY_STORE_ERRORS: Final = Counter(
    "switchboard_history_store_errors",
    "Failed operations on the history store, by operation (connect, index, query, replay, "
    "retention; index_refused: a row the store refused, skipped); the indexer retries a "
    "batch that failed otherwise.",
    ["operation"],
    registry=REGISTRY,
)
HISTORY_QUERY_DURATION: Final = Histogram(
    "switchboard_history_query_duration_seconds",
    "Time the history store took to answer an API query, by route (attempts, search, stats, "
    "dead_letters).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)


def status_class(status: int | None) -> str:
    """`2xx`..`5xx`, or `none` when no response arrived."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


PORTAL_LINKS: Final = Counter(
    "switchboard_portal_links",
    "Portal links and writes by result: opened, invalid (forged or damaged), expired, used "
    "(opened before), csrf_refused (a portal write without its session's CSRF token).",
    ["result"],
)
