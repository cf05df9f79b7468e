"""Tracing settings, read from OpenTelemetry's standard `OTEL_*` variables.

Tracing is on when an OTLP endpoint is named (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_EXPORTER_OTLP_ENDPOINT` plus `/v1/traces`) and neither `OTEL_SDK_DISABLED=true` nor
`OTEL_TRACES_EXPORTER=none` turns it off; off otherwise. The variables are read here from the
mapping the settings are loaded from, not by the SDK from the process environment, so that
each service instance (several per test process) has its own exporter. What is not read
here (the exporter's TLS files and compression) the SDK reads from the process environment
itself, which in a deployment is the same mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote

import msgspec

# Only OTLP over HTTP with protobuf bodies is shipped: it needs no gRPC stack, and every
# collector (and Jaeger, Tempo, Honeycomb...) accepts it.
_PROTOCOL: Final = "http/protobuf"
# The specification's default export timeout.
DEFAULT_TIMEOUT_MS: Final = 10_000
SAMPLERS: Final = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
_RATIO_SAMPLERS: Final = frozenset({"traceidratio", "parentbased_traceidratio"})
DEFAULT_SERVICE_NAME: Final = "switchboard"
# The batch span processor's defaults, from the specification: export every 5 s or at 512
# spans; past 2048 queued, new spans are dropped rather than held (memory stays bounded).
_BSP_DEFAULTS: Final = {
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
}


class TracingConfigError(ValueError):
    """An `OTEL_*` variable that cannot work; the message names it, never its value."""


class TracingSettings(msgspec.Struct, frozen=True, kw_only=True):
    # The full URL spans are POSTed to (…/v1/traces).
    endpoint: str
    # Export request headers: often a vendor's API key, so masked wherever settings are shown.
    headers: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = DEFAULT_TIMEOUT_MS / 1000
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()
    sampler: str = "parentbased_always_on"
    sampler_ratio: float = 1.0
    schedule_delay_ms: int = _BSP_DEFAULTS["OTEL_BSP_SCHEDULE_DELAY"]
    max_queue_size: int = _BSP_DEFAULTS["OTEL_BSP_MAX_QUEUE_SIZE"]
    max_export_batch_size: int = _BSP_DEFAULTS["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"]

    def masked(self) -> dict[str, Any]:
        out = msgspec.structs.asdict(self)
        out["headers"] = [(name, "***") for name, _ in self.headers]
        return out


def tracing_from_env(env: Mapping[str, str]) -> TracingSettings | None:
    """The tracing settings, or None when tracing is off; TracingConfigError if a variable
    cannot work."""

    def get(*names: str) -> str | None:
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return value
        return None

    if (get("OTEL_SDK_DISABLED") or "").lower() == "true":
        return None
    exporter = (get("OTEL_TRACES_EXPORTER") or "otlp").lower()
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise TracingConfigError("OTEL_TRACES_EXPORTER: only otlp (or none) is supported")
    endpoint = _endpoint(get)
    if endpoint is None:
        return None
    resource = _pairs(env, "OTEL_RESOURCE_ATTRIBUTES")
    sampler, ratio = _sampler(get)
    batch = _batch(get)
    return TracingSettings(
        endpoint=endpoint,
        headers=tuple(
            {
                **_pairs(env, "OTEL_EXPORTER_OTLP_HEADERS"),
                **_pairs(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
            }.items()
        ),
        timeout_seconds=_timeout_ms(get) / 1000,
        service_name=get("OTEL_SERVICE_NAME") or resource.get("service.name", DEFAULT_SERVICE_NAME),
        resource_attributes=tuple(resource.items()),
        sampler=sampler,
        sampler_ratio=ratio,
        schedule_delay_ms=batch["OTEL_BSP_SCHEDULE_DELAY"],
        max_queue_size=batch["OTEL_BSP_MAX_QUEUE_SIZE"],
        max_export_batch_size=batch["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
    )


_Get = Callable[..., str | None]


def _endpoint(get: _Get) -> str | None:
    """The traces URL: the signal's own endpoint as given, or the base plus /v1/traces."""
    endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if endpoint is None and (base := get("OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
        endpoint = base.rstrip("/") + "/v1/traces"
    if endpoint is None:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise TracingConfigError("OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT: an http(s):// URL")
    protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol not in (None, _PROTOCOL):
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: only {_PROTOCOL} is supported"
        )
    return endpoint


def _timeout_ms(get: _Get) -> float:
    name = (
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        if get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        else "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    timeout = _number(get(name), name, DEFAULT_TIMEOUT_MS)
    if timeout <= 0:
        raise TracingConfigError(f"{name}: milliseconds, > 0")
    return timeout


def _sampler(get: _Get) -> tuple[str, float]:
    sampler = (get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
    if sampler not in SAMPLERS:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER: one of {', '.join(SAMPLERS)}")
    ratio = 1.0
    if sampler in _RATIO_SAMPLERS:
        ratio = _number(get("OTEL_TRACES_SAMPLER_ARG"), "OTEL_TRACES_SAMPLER_ARG", 1.0)
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError("OTEL_TRACES_SAMPLER_ARG: a ratio in [0, 1]")
    return sampler, ratio


def _batch(get: _Get) -> dict[str, int]:
    batch = {
        name: int(_number(get(name), name, default)) for name, default in _BSP_DEFAULTS.items()
    }
    if any(value <= 0 for value in batch.values()):
        raise TracingConfigError("OTEL_BSP_*: each a number > 0")
    if batch["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > batch["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise TracingConfigError("OTEL_BSP_MAX_EXPORT_BATCH_SIZE: at most OTEL_BSP_MAX_QUEUE_SIZE")
    return batch


def _pairs(env: Mapping[str, str], name: str) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoded values (the W3C baggage form the spec uses)."""
    out: dict[str, str] = {}
    for item in env.get(name, "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The value may be a credential: the message names the variable only.
            raise TracingConfigError(f"{name}: a comma-separated list of key=value")
        out[unquote(key.strip())] = unquote(value.strip())
    return out


def _number(raw: str | None, name: str, default: float) -> float:
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise TracingConfigError(f"{name}: a number") from None
