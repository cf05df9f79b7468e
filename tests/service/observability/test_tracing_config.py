"""Tracing settings from the standard OTEL_* variables: on only with an endpoint, errors that
name the variable and never its value."""

from __future__ import annotations

import pytest

from service.config import ConfigError, load_settings
from service.observability.tracing_config import TracingConfigError, tracing_from_env

BASE = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def test_off_without_an_endpoint() -> None:
    assert tracing_from_env({}) is None
    assert tracing_from_env({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}) is None


def test_the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_used_as_given() -> None:
    on = tracing_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert on is not None
    assert on.endpoint == "http://collector:4318/v1/traces"
    own = tracing_from_env({**BASE, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t.example/x"})
    assert own is not None
    assert own.endpoint == "https://t.example/x"


@pytest.mark.parametrize(
    "off",
    [
        {"OTEL_SDK_DISABLED": "true"},
        {"OTEL_SDK_DISABLED": "TRUE"},
        {"OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_disabled_by_the_standard_switches(off: dict[str, str]) -> None:
    assert tracing_from_env({**BASE, **off}) is None


def test_defaults() -> None:
    on = tracing_from_env(BASE)
    assert on is not None
    assert on.service_name == "switchboard"
    assert on.sampler == "parentbased_always_on"
    assert on.timeout_seconds == 10.0
    assert (on.schedule_delay_ms, on.max_queue_size, on.max_export_batch_size) == (5000, 2048, 512)


def test_headers_resource_sampler_timeout_and_batching() -> None:
    on = tracing_from_env(
        {
            **BASE,
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b, x=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x=2",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource,deployment.environment=prod",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    assert on is not None
    assert dict(on.headers) == {"api-key": "a b", "x": "2"}
    assert on.service_name == "from-resource"
    assert dict(on.resource_attributes)["deployment.environment"] == "prod"
    assert (on.sampler, on.sampler_ratio) == ("parentbased_traceidratio", 0.25)
    assert on.timeout_seconds == 2.5
    assert on.schedule_delay_ms == 200
    named = tracing_from_env({**BASE, "OTEL_SERVICE_NAME": "sb-eu", "OTEL_RESOURCE_ATTRIBUTES":
                              "service.name=other"})  # fmt: skip
    assert named is not None
    assert named.service_name == "sb-eu"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, "ENDPOINT"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, "SAMPLER_ARG"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"}, "BATCH_SIZE"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "-1"}, "OTEL_BSP_"),
    ],
)
def test_variables_that_cannot_work_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigError, match=named):
        tracing_from_env({**BASE, **env})


def test_a_malformed_header_list_is_named_without_its_value() -> None:
    with pytest.raises(TracingConfigError) as caught:
        tracing_from_env({**BASE, "OTEL_EXPORTER_OTLP_HEADERS": "api-key-s3cret-no-equals"})
    assert "OTEL_EXPORTER_OTLP_HEADERS" in str(caught.value)
    assert "s3cret" not in str(caught.value)


TOKEN = {"SWITCHBOARD_ADMIN_TOKEN": "t" * 20}


def test_settings_carry_tracing_and_mask_the_export_headers() -> None:
    assert load_settings(TOKEN).tracing is None
    settings = load_settings({**TOKEN, **BASE, "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret"})
    assert settings.tracing is not None
    assert dict(settings.tracing.headers) == {"api-key": "s3cret"}
    shown = settings.masked()
    assert "s3cret" not in repr(shown)
    assert shown["tracing"]["endpoint"] == "http://collector:4318/v1/traces"


def test_tracing_is_not_a_switchboard_variable_and_bad_otel_stops_start() -> None:
    with pytest.raises(ConfigError, match="OTEL_"):
        load_settings({**TOKEN, "SWITCHBOARD_TRACING": "on"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER"):
        load_settings({**TOKEN, **BASE, "OTEL_TRACES_SAMPLER": "nope"})
