"""Typed settings from `SWITCHBOARD_*` environment variables and an optional YAML file.

The environment wins over the file, so a ConfigMap can hold the file and a Secret the token.
Everything is validated once at start; a bad value stops the process with a message that names
the variable, instead of failing later inside the consumer loop.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import yaml
from cryptography.fernet import Fernet

from service.catalog.correlation import parse_overrides
from service.observability.tracing_config import (
    TracingConfigError,
    TracingSettings,
    tracing_from_env,
)
from service.retries.policy import DEFAULT_SCHEDULE

ENV_PREFIX: Final = "SWITCHBOARD_"

# A week: long enough for any receiver's deploy cycle, short enough that a leaked old secret dies.
MAX_ROTATION_GRACE: Final = 7 * 86_400

# Longest wait of one retry tier: a day. Retry topics keep records for a week, so a record
# is always read before the broker deletes it.
MAX_RETRY_WAIT: Final = 86_400.0

# Settings whose values must never reach a log line or an error message.
# The history DSN holds the database password.
SECRET_FIELDS: Final = frozenset(
    {"admin_token", "kafka_sasl_password", "secrets_key", "history_dsn"}
)


class ConfigError(Exception):
    """The settings are unusable; the message names the offending setting."""


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # Kafka connection
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    # Idempotent producers need broker support (the test broker has none), so it can be turned off.
    kafka_enable_idempotence: bool = True
    client_id: str = "switchboard"
    # How long a fetch may wait for data. Kafka answers as soon as data arrives, so the
    # default costs nothing there; brokers that hold fetches to the deadline (the test
    # broker does) want it low, since it becomes added latency.
    kafka_fetch_max_wait_ms: int = 500
    # What one fetch brings into memory: per partition, and in all. Each partition a consumer
    # reads can hold a fetch's worth, so aiokafka's defaults (1 MiB and 50 MiB) held tens of
    # MiB per consumer at volume; a record bigger than either is still fetched (whole, alone).
    # Measured in docs/performance.md.
    kafka_max_partition_fetch_bytes: int = 262_144
    kafka_fetch_max_bytes: int = 1_048_576
    kafka_session_timeout_ms: int = 10_000

    # Topics
    event_topics: tuple[str, ...] = ("voice.events",)
    group_id: str = "switchboard"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    subscriptions_topic: str = "switchboard.subscriptions"
    invalid_topic: str = "switchboard.invalid"
    create_topics: bool = True
    # Partitions of the internal topics. The deliveries topic and the retry tiers share the
    # count, so that a subscription's partition has one owner in all of them: it bounds how
    # many replicas share the delivery work, and how many endpoints share a partition.
    topic_partitions: int = 12
    topic_replication_factor: int = 3

    # HTTP server
    http_host: str = "0.0.0.0"  # noqa: S104 - a pod listens on all of its interfaces
    http_port: int = 8080
    admin_token: str = ""

    # Delivery
    allow_private_targets: bool = False
    # Plain-http webhook URLs; https only unless set (tests and the demo set it).
    allow_http: bool = False
    # An HTTP proxy all deliveries go through (e.g. smokescreen); proxy variables of the
    # environment are never used.
    egress_proxy: str | None = None
    # Fernet keys sealing signing secrets at rest; the first seals, all open. Empty: plaintext.
    secrets_key: tuple[str, ...] = ()
    # How long a rotated-out signing secret keeps signing, unless the request says otherwise.
    secret_rotation_grace_seconds: int = 86_400
    # Networks reachable despite the private-range table, e.g. an internal partner gateway.
    allowed_networks: tuple[str, ...] = ()
    http_max_connections: int = 1000
    # How long a receiver's resolved addresses are reused. A name that stops resolving fails
    # deliveries only once its entry expires; a moved receiver is found after at most this.
    dns_cache_seconds: int = 60
    response_body_cap_bytes: int = 4096
    max_event_bytes: int = 1024 * 1024

    # Retries (docs/architecture.md, "Retries on Kafka")
    # Wait before each retry, in seconds; after the n-th failed attempt the n-th entry applies.
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    # No retry is scheduled past this long after a delivery's first attempt; then it is a
    # dead letter. Three days cover the default schedule (about 28 hours) with room to spare.
    retry_window_seconds: float = 3 * 86_400
    # A receiver's Retry-After is honoured up to this.
    retry_after_max_seconds: float = 3600.0
    retry_topic_prefix: str = "switchboard.retry"
    # Each routed event becomes one record per matched subscription here, keyed by the
    # subscription's id: the replica that owns its partition makes every delivery to it.
    deliveries_topic: str = "switchboard.deliveries"
    dead_letter_topic: str = "switchboard.dlq"
    # Ordered subscriptions' keys and held deliveries (docs/ordering.md): compacted, and
    # co-partitioned with the deliveries topic.
    ordering_topic: str = "switchboard.ordering"
    # An endpoint's deliveries beyond its horizon, when its partition is shared with others
    # that would wait for it (docs/architecture.md, "Parking"): compacted, co-partitioned.
    parking_topic: str = "switchboard.parked"
    # A key with nothing waiting is forgotten after this long idle; seen again, its sequence
    # numbers start again at 1. A week covers a call's or a conversation's life many times.
    ordering_key_idle_seconds: float = 7 * 86_400
    ops_topic: str = "switchboard.ops"
    # The delivery log: every attempt, indexed into the history store once per fleet.
    attempts_topic: str = "switchboard.attempts"
    # Pre-call lookups (request/reply): the longest a caller is kept waiting for an answer.
    lookup_deadline_seconds: float = 2.0
    # Topics of lookup requests only, read by every replica without a consumer group: they
    # never wait behind events of their partition, nor for a rebalance. Lookups on the event
    # topics are answered too, as before, by the events group.
    lookup_topics: tuple[str, ...] = ()
    # The lookup topics are read without a consumer group (consumers/lookups/): each replica
    # heartbeats here, and a partition is answered by the live member that wins it by
    # rendezvous hashing. Compacted, one partition, created with the lookup topics.
    lookup_members_topic: str = "switchboard.lookup-members"
    # A heartbeat also reports how far this replica has answered its partitions: a new owner
    # repeats at most this much (plus a commit interval) of the last owner's answers.
    lookup_heartbeat_seconds: float = 1.0
    # A member not heard from for this long is gone (a crash): its partitions are taken over,
    # so the requests made meanwhile wait at most this long. Three heartbeats: one lost or
    # late heartbeat does not move partitions.
    lookup_member_timeout_seconds: float = 3.0
    # The circuit opens when at least circuit_min_calls attempts in the last
    # circuit_window_seconds failed at circuit_failure_rate or more. 80%, not Resilience4j's
    # 50%: receivers that refuse first attempts or fail half of their requests at random are
    # served better by retries than by a circuit, which is for endpoints that are down.
    circuit_window_seconds: float = 60.0
    circuit_min_calls: int = 20
    circuit_failure_rate: float = 0.8
    # Open this long, doubled after each failed probe up to the max: an endpoint that recovers
    # gets its deliveries back within a minute.
    circuit_open_seconds: float = 15.0
    circuit_max_open_seconds: float = 60.0
    # While an endpoint's circuit is open, at most this many of its attempts per second are
    # counted as failed (each is logged and handed to a retry tier or a dead letter, about a
    # delivery's CPU). Its further deliveries wait in Kafka, outside memory, so that a dead
    # endpoint's backlog takes nothing that shows from the healthy ones (docs/architecture.md,
    # "The circuit breaker"): a refusing neighbour cost a healthy endpoint 40-52% of its rate
    # unpaced (docs/performance.md). An endpoint sent more than this while down falls behind
    # by the difference, and catches up at full rate once its circuit closes.
    circuit_open_pace: float = 50.0
    # A subscription failing without a single success for this long is disabled.
    auto_disable_after_seconds: float = 5 * 86_400

    # The history store (docs/operations.md, "The history store"): a postgresql:// URL.
    # Without it the service delivers, and the log, stats and dead-letter routes answer 503.
    history_dsn: str | None = None
    # Days of attempts, roll-ups and dead letters kept; older days are dropped whole.
    history_retention_days: int = 30
    # Correlation key paths replacing the catalog's defaults: `call_id=data.call.sid|data.sid`.
    correlation_paths: tuple[str, ...] = ()

    # The customers' portal (docs/api.md, "Portal sessions"). The session cookie is Secure
    # unless this is off (a demo on plain http); SameSite=None is what a cross-site iframe
    # needs (then the cookie is also Partitioned), Lax or Strict when the portal is same-site.
    portal_cookie_secure: bool = True
    portal_cookie_samesite: Literal["Strict", "Lax", "None"] = "Lax"
    # Origins allowed to embed the portal in an iframe (CSP frame-ancestors); none: no framing.
    portal_frame_ancestors: tuple[str, ...] = ()
    # The portal's public base URL for session links (https://hooks.example.com); unset: the
    # scheme and host the POST /v1/portal-sessions request came to.
    portal_public_url: str | None = None

    # Consumer loop
    max_records_in_flight: int = 5000
    # Everything read since the last commit is delivered again after a crash: at 500 events/s a
    # SIGKILL redelivered a median of 504 at 1 s and 106 at 0.2 s (docs/reliability.md), for one
    # commit request per consumer group five times a second.
    commit_interval_seconds: float = 0.2
    shutdown_grace_seconds: float = 20.0
    rebalance_grace_seconds: float = 5.0
    max_poll_records: int = 500

    # uvloop used 2-9% less CPU per delivery than asyncio in each of three benchmark runs
    # (docs/performance.md); asyncio stays selectable where uvloop is not available.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Logging
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    # Spans over OTLP/HTTP, from the standard OTEL_* variables (not SWITCHBOARD_*): None is off.
    tracing: TracingSettings | None = None

    def internal_topics(self) -> list[str]:
        """The service's own topics (retry tiers aside, see retry_topic_prefix)."""
        return [self.subscriptions_topic, self.invalid_topic, self.dead_letter_topic,
                self.ops_topic, self.attempts_topic, self.deliveries_topic,
                self.ordering_topic, self.parking_topic,
                self.lookup_members_topic]  # fmt: skip

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError("; ".join(problems))

    def masked(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: secrets replaced by a marker."""
        out = msgspec.structs.asdict(self)
        for name in SECRET_FIELDS:
            if out.get(name):
                out[name] = "***"
        if self.tracing is not None:
            out["tracing"] = self.tracing.masked()
        return out


def _problems(s: Settings) -> list[str]:
    out: list[str] = []

    def need(cond: bool, field: str, message: str) -> None:
        if not cond:
            out.append(f"{ENV_PREFIX}{field.upper()}: {message}")

    need(len(s.admin_token) >= 16, "admin_token", "required, at least 16 characters")
    need(bool(s.event_topics) and all(s.event_topics), "event_topics", "at least one topic")
    need(bool(s.kafka_bootstrap_servers), "kafka_bootstrap_servers", "required")
    need(0 <= s.http_port < 65536, "http_port", "must be 0..65535 (0 picks a free port)")
    need(s.topic_partitions >= 1, "topic_partitions", "must be >= 1")
    need(s.topic_replication_factor >= 1, "topic_replication_factor", "must be >= 1")
    need(s.http_max_connections >= 1, "http_max_connections", "must be >= 1")
    need(s.dns_cache_seconds >= 0, "dns_cache_seconds", "must be >= 0")
    need(s.response_body_cap_bytes >= 0, "response_body_cap_bytes", "must be >= 0")
    need(s.max_event_bytes >= 1024, "max_event_bytes", "must be >= 1024")
    need(
        bool(s.retry_schedule) and all(0 <= w <= MAX_RETRY_WAIT for w in s.retry_schedule),
        "retry_schedule",
        f"comma-separated waits in seconds, each 0..{MAX_RETRY_WAIT}",
    )
    need(s.retry_window_seconds > 0, "retry_window_seconds", "must be > 0")
    need(s.retry_after_max_seconds >= 0, "retry_after_max_seconds", "must be >= 0")
    out.extend(_history_problems(s))
    out.extend(_portal_problems(s))
    need(0 < s.lookup_deadline_seconds <= 30, "lookup_deadline_seconds", "must be in (0, 30]")
    out.extend(_topic_problems(s))
    out.extend(_circuit_problems(s))
    need(s.auto_disable_after_seconds > 0, "auto_disable_after_seconds", "must be > 0")
    internal = s.internal_topics()
    need(
        not set(s.event_topics) & set(internal)
        and not any(t.startswith(s.retry_topic_prefix + ".") for t in s.event_topics),
        "event_topics",
        "must not name one of the service's own topics",
    )
    need(s.max_records_in_flight >= 1, "max_records_in_flight", "must be >= 1")
    need(s.commit_interval_seconds > 0, "commit_interval_seconds", "must be > 0")
    need(s.shutdown_grace_seconds >= 0, "shutdown_grace_seconds", "must be >= 0")
    need(s.rebalance_grace_seconds >= 0, "rebalance_grace_seconds", "must be >= 0")
    need(s.max_poll_records >= 1, "max_poll_records", "must be >= 1")
    need(
        0 <= s.secret_rotation_grace_seconds <= MAX_ROTATION_GRACE,
        "secret_rotation_grace_seconds",
        f"must be 0..{MAX_ROTATION_GRACE}",
    )
    need(0 <= s.kafka_fetch_max_wait_ms <= 10_000, "kafka_fetch_max_wait_ms", "must be 0..10000")
    need(s.kafka_max_partition_fetch_bytes >= 1024, "kafka_max_partition_fetch_bytes",
         "must be >= 1024")  # fmt: skip
    need(s.kafka_fetch_max_bytes >= s.kafka_max_partition_fetch_bytes, "kafka_fetch_max_bytes",
         "must be >= KAFKA_MAX_PARTITION_FETCH_BYTES")  # fmt: skip
    need(s.kafka_session_timeout_ms >= 1000, "kafka_session_timeout_ms", "must be >= 1000")
    for net in s.allowed_networks:
        try:
            ipaddress.ip_network(net)
        except ValueError as exc:
            out.append(f"{ENV_PREFIX}ALLOWED_NETWORKS: {exc}")
    if s.egress_proxy is not None:
        need(
            s.egress_proxy.startswith(("http://", "https://")),
            "egress_proxy",
            "an http:// or https:// URL",
        )
    for key in s.secrets_key:
        try:
            Fernet(key.encode())
        except ValueError:
            out.append(f"{ENV_PREFIX}SECRETS_KEY: each key must be 32 url-safe base64 bytes "
                       "(Fernet.generate_key())")  # fmt: skip
            break
    sasl = s.kafka_security_protocol.startswith("SASL")
    need(
        not sasl or bool(s.kafka_sasl_mechanism and s.kafka_sasl_username),
        "kafka_sasl_mechanism",
        "SASL needs a mechanism, a username and a password",
    )
    return out


def _topic_problems(s: Settings) -> list[str]:
    """The lookup topics, and the keys kept in the ordering topic."""
    out = []
    if set(s.lookup_topics) & {*s.event_topics, *s.internal_topics()}:
        out.append(f"{ENV_PREFIX}LOOKUP_TOPICS: must not name an event topic or one of the "
                   "service's own")  # fmt: skip
    if not 0 < s.lookup_heartbeat_seconds <= 60:
        out.append(f"{ENV_PREFIX}LOOKUP_HEARTBEAT_SECONDS: must be in (0, 60]")
    elif s.lookup_member_timeout_seconds < 2 * s.lookup_heartbeat_seconds:
        out.append(f"{ENV_PREFIX}LOOKUP_MEMBER_TIMEOUT_SECONDS: at least two heartbeats "
                   "(LOOKUP_HEARTBEAT_SECONDS): one late one must not move partitions")  # fmt: skip
    if s.ordering_key_idle_seconds <= 0:
        out.append(f"{ENV_PREFIX}ORDERING_KEY_IDLE_SECONDS: must be > 0")
    return out


def _portal_problems(s: Settings) -> list[str]:
    out = []
    for origin in s.portal_frame_ancestors:
        # Each one goes into a CSP header: a scheme and host, nothing that could end the
        # directive or add another.
        if not origin.startswith(("https://", "http://")) or any(c in origin for c in " ;,'"):
            out.append(f"{ENV_PREFIX}PORTAL_FRAME_ANCESTORS: {origin!r} is not an origin "
                       "(https://app.example.com)")  # fmt: skip
    if s.portal_public_url is not None and not s.portal_public_url.startswith(
        ("https://", "http://")
    ):
        out.append(f"{ENV_PREFIX}PORTAL_PUBLIC_URL: an http:// or https:// URL")
    if s.portal_cookie_samesite == "None" and not s.portal_cookie_secure:
        out.append(f"{ENV_PREFIX}PORTAL_COOKIE_SAMESITE: None needs PORTAL_COOKIE_SECURE "
                   "(browsers drop such a cookie otherwise)")  # fmt: skip
    return out


def _circuit_problems(s: Settings) -> list[str]:
    checks = [
        (s.circuit_window_seconds > 0, "WINDOW_SECONDS: must be > 0"),
        (s.circuit_min_calls >= 1, "MIN_CALLS: must be >= 1"),
        (0 < s.circuit_failure_rate <= 1, "FAILURE_RATE: must be in (0, 1]"),
        (s.circuit_open_seconds > 0, "OPEN_SECONDS: must be > 0"),
        (
            s.circuit_max_open_seconds >= s.circuit_open_seconds,
            "MAX_OPEN_SECONDS: must be >= CIRCUIT_OPEN_SECONDS",
        ),
        (s.circuit_open_pace > 0, "OPEN_PACE: must be > 0"),
    ]
    return [f"{ENV_PREFIX}CIRCUIT_{problem}" for ok, problem in checks if not ok]


def _history_problems(s: Settings) -> list[str]:
    out = []
    if s.history_dsn is not None and not s.history_dsn.startswith(("postgresql://", "postgres://")):
        out.append(f"{ENV_PREFIX}HISTORY_DSN: a postgresql:// URL")
    if not 1 <= s.history_retention_days <= 3650:
        out.append(f"{ENV_PREFIX}HISTORY_RETENTION_DAYS: must be 1..3650")
    try:
        parse_overrides(s.correlation_paths)
    except ValueError as exc:
        out.append(f"{ENV_PREFIX}CORRELATION_PATHS: {exc}")
    return out


_LIST_FIELDS: Final = frozenset(
    name
    for name, typ in zip(Settings.__struct_fields__, msgspec.structs.fields(Settings), strict=True)
    if "tuple" in str(typ.type)
)


_HINTS: Final = typing.get_type_hints(Settings)
_BOOL_FIELDS: Final = frozenset(name for name, hint in _HINTS.items() if hint is bool)
# The spellings of yes and no that operators write in environment files and charts.
_BOOL_WORDS: Final = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def _choices(hint: Any) -> tuple[str, ...]:
    """The values of a Literal setting (also inside `| None`); () for any other type."""
    if typing.get_origin(hint) is Literal:
        return tuple(str(a) for a in typing.get_args(hint))
    return tuple(c for arg in typing.get_args(hint) for c in _choices(arg))


_CHOICE_FIELDS: Final = {name: c for name, hint in _HINTS.items() if (c := _choices(hint))}


def _normalized(raw: dict[str, Any]) -> dict[str, Any]:
    """Bools in their usual spellings and Literal settings in any case, as the settings want
    them; anything else that cannot be one raises ConfigError listing what is accepted."""
    out = dict(raw)
    for name, value in raw.items():
        if not isinstance(value, str):
            continue
        if name in _BOOL_FIELDS:
            if value.strip().lower() not in _BOOL_WORDS:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}: {value!r} is not a yes or no; "
                    "use true/false, yes/no, on/off or 1/0"
                )
            out[name] = _BOOL_WORDS[value.strip().lower()]
        elif (choices := _CHOICE_FIELDS.get(name)) is not None:
            match = next((c for c in choices if c.lower() == value.strip().lower()), None)
            if match is None:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}: {value!r} is not one of {', '.join(choices)}"
                )
            out[name] = match
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = set(Settings.__struct_fields__)
    raw: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name == "config":  # the path of the YAML file itself
            continue
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
            raise ConfigError(f"{key}: unknown setting{hint}")
        if name in _LIST_FIELDS:
            raw[name] = [part.strip() for part in value.split(",") if part.strip()]
        elif value == "" and _optional(name):
            raw[name] = None
        else:
            raw[name] = value
    return raw


def _optional(name: str) -> bool:
    field = next(f for f in msgspec.structs.fields(Settings) if f.name == name)
    return "None" in str(field.type)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read settings file: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return {str(k).lower(): v for k, v in loaded.items()}


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build and validate the settings; raise ConfigError naming what is wrong."""
    env = os.environ if environ is None else environ
    path = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    raw: dict[str, Any] = _from_file(Path(path)) if path else {}
    raw.update(_from_env(env))
    if "tracing" in raw:
        raise ConfigError(f"{ENV_PREFIX}TRACING: tracing is set by the standard OTEL_* variables")
    try:
        raw["tracing"] = tracing_from_env(env)
    except TracingConfigError as exc:
        raise ConfigError(str(exc)) from None
    raw = _normalized(raw)
    try:
        # strict=False lets "8080" and "true" from the environment become int and bool.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_env_name_in(str(exc))) from None


def _env_name_in(message: str) -> str:
    # msgspec says "... - at `$.http_port`"; operators know the variable name instead.
    if "`$." in message:
        head, _, tail = message.partition("`$.")
        field = tail.split("`", 1)[0]
        return f"{ENV_PREFIX}{field.upper()}: {head.removesuffix(' - at ')}"
    return message
