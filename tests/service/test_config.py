"""Settings: environment and YAML, validated at start with errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from service.config import ConfigError, load_settings

TOKEN = {"SWITCHBOARD_ADMIN_TOKEN": "t" * 20}
KEY = Fernet.generate_key().decode()


def test_defaults() -> None:
    s = load_settings(TOKEN)
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.event_topics == ("voice.events",)
    assert s.group_id == "switchboard"
    assert s.http_port == 8080
    assert s.allow_private_targets is False
    assert s.log_format == "json"


def test_environment_types_and_lists() -> None:
    s = load_settings(
        {
            **TOKEN,
            "SWITCHBOARD_EVENT_TOPICS": "voice.events, campaign.events",
            "SWITCHBOARD_HTTP_PORT": "9090",
            "SWITCHBOARD_ALLOW_PRIVATE_TARGETS": "true",
            "SWITCHBOARD_COMMIT_INTERVAL_SECONDS": "0.5",
            "OTHER_VARIABLE": "ignored",
        }
    )
    assert s.event_topics == ("voice.events", "campaign.events")
    assert s.http_port == 9090
    assert s.allow_private_targets is True
    assert s.commit_interval_seconds == 0.5


def test_yaml_file_with_environment_winning(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.yaml"
    path.write_text("group_id: from-file\nhttp_port: 7000\nevent_topics: [a, b]\n")
    s = load_settings({**TOKEN, "SWITCHBOARD_HTTP_PORT": "7001"}, config_file=path)
    assert (s.group_id, s.http_port, s.event_topics) == ("from-file", 7001, ("a", "b"))


def test_retry_schedule_from_the_environment() -> None:
    s = load_settings({**TOKEN, "SWITCHBOARD_RETRY_SCHEDULE": "0, 0.25,5"})
    assert s.retry_schedule == (0.0, 0.25, 5.0)
    assert load_settings(TOKEN).retry_schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SWITCHBOARD_ADMIN_TOKEN"),
        ({**TOKEN, "SWITCHBOARD_HTTP_PORT": "eighty"}, "SWITCHBOARD_HTTP_PORT"),
        ({**TOKEN, "SWITCHBOARD_HTTP_PORT": "70000"}, "SWITCHBOARD_HTTP_PORT"),
        ({**TOKEN, "SWITCHBOARD_LOG_FORMAT": "xml"}, "SWITCHBOARD_LOG_FORMAT"),
        ({**TOKEN, "SWITCHBOARD_EVENT_TOPICS": " , "}, "SWITCHBOARD_EVENT_TOPICS"),
        ({**TOKEN, "SWITCHBOARD_GROUPID": "typo"}, "SWITCHBOARD_GROUPID: unknown setting"),
        ({**TOKEN, "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL"),
        ({**TOKEN, "SWITCHBOARD_RETRY_SCHEDULE": "5,soon"}, "SWITCHBOARD_RETRY_SCHEDULE"),
        ({**TOKEN, "SWITCHBOARD_RETRY_SCHEDULE": "5,-1"}, "SWITCHBOARD_RETRY_SCHEDULE"),
        ({**TOKEN, "SWITCHBOARD_RETRY_SCHEDULE": "5,90000"}, "SWITCHBOARD_RETRY_SCHEDULE"),
        ({**TOKEN, "SWITCHBOARD_RETRY_SCHEDULE": ","}, "SWITCHBOARD_RETRY_SCHEDULE"),
        ({**TOKEN, "SWITCHBOARD_DNS_CACHE_SECONDS": "-1"}, "SWITCHBOARD_DNS_CACHE_SECONDS"),
        ({**TOKEN, "SWITCHBOARD_EVENT_TOPICS": "switchboard.dlq"}, "SWITCHBOARD_EVENT_TOPICS"),
        ({**TOKEN, "SWITCHBOARD_EVENT_TOPICS": "switchboard.retry.5s"}, "SWITCHBOARD_EVENT_TOPICS"),
        (
            {**TOKEN, "SWITCHBOARD_CIRCUIT_MAX_OPEN_SECONDS": "1"},
            "SWITCHBOARD_CIRCUIT_MAX_OPEN_SECONDS",
        ),
        ({**TOKEN, "SWITCHBOARD_LOOKUP_HEARTBEAT_SECONDS": "0"}, "LOOKUP_HEARTBEAT_SECONDS"),
        (
            {**TOKEN, "SWITCHBOARD_LOOKUP_MEMBER_TIMEOUT_SECONDS": "1.5"},
            "SWITCHBOARD_LOOKUP_MEMBER_TIMEOUT_SECONDS: at least two heartbeats",
        ),
        (
            {**TOKEN, "SWITCHBOARD_LOOKUP_TOPICS": "switchboard.lookup-members"},
            "SWITCHBOARD_LOOKUP_TOPICS",
        ),
        (
            {**TOKEN, "SWITCHBOARD_KAFKA_MAX_PARTITION_FETCH_BYTES": "100"},
            "SWITCHBOARD_KAFKA_MAX_PARTITION_FETCH_BYTES",
        ),
        (
            {**TOKEN, "SWITCHBOARD_KAFKA_FETCH_MAX_BYTES": "65536"},
            "SWITCHBOARD_KAFKA_FETCH_MAX_BYTES: must be >= KAFKA_MAX_PARTITION_FETCH_BYTES",
        ),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(TOKEN, config_file=path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(TOKEN, config_file=tmp_path / "missing.yaml")


def test_masked_settings_hide_secrets() -> None:
    s = load_settings(
        {
            **TOKEN,
            "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SWITCHBOARD_KAFKA_SASL_MECHANISM": "PLAIN",
            "SWITCHBOARD_KAFKA_SASL_USERNAME": "svc",
            "SWITCHBOARD_KAFKA_SASL_PASSWORD": "hunter2",
            "SWITCHBOARD_SECRETS_KEY": KEY,
        }
    )
    masked = s.masked()
    assert masked["admin_token"] == "***"
    assert masked["kafka_sasl_password"] == "***"
    assert masked["secrets_key"] == "***"
    assert KEY not in repr(masked)
    assert "hunter2" not in repr(masked)
    assert "t" * 20 not in repr(masked)


def test_allowed_networks_are_validated() -> None:
    s = load_settings({**TOKEN, "SWITCHBOARD_ALLOWED_NETWORKS": "10.20.0.0/16, fd00:1::/64"})
    assert s.allowed_networks == ("10.20.0.0/16", "fd00:1::/64")
    with pytest.raises(ConfigError, match="SWITCHBOARD_ALLOWED_NETWORKS"):
        load_settings({**TOKEN, "SWITCHBOARD_ALLOWED_NETWORKS": "10.20.0.0/33"})


def test_secrets_key_must_be_fernet_keys() -> None:
    assert load_settings({**TOKEN, "SWITCHBOARD_SECRETS_KEY": f"{KEY},{KEY}"}).secrets_key
    with pytest.raises(ConfigError, match="SWITCHBOARD_SECRETS_KEY"):
        load_settings({**TOKEN, "SWITCHBOARD_SECRETS_KEY": "not-a-key"})


def test_history_settings_are_validated_and_the_dsn_masked() -> None:
    dsn = "postgresql://sb:pa55word@db:5432/switchboard"
    paths = "call_id=data.call.sid|data.sid"
    s = load_settings(
        {**TOKEN, "SWITCHBOARD_HISTORY_DSN": dsn, "SWITCHBOARD_CORRELATION_PATHS": paths}
    )
    assert s.history_retention_days == 30
    assert s.correlation_paths == ("call_id=data.call.sid|data.sid",)
    assert "pa55word" not in repr(s.masked())
    for env, message in (
        ({"SWITCHBOARD_HISTORY_DSN": "mysql://x"}, "SWITCHBOARD_HISTORY_DSN"),
        ({"SWITCHBOARD_HISTORY_RETENTION_DAYS": "0"}, "SWITCHBOARD_HISTORY_RETENTION_DAYS"),
        ({"SWITCHBOARD_CORRELATION_PATHS": "ticket=data.t"}, "SWITCHBOARD_CORRELATION_PATHS"),
        ({"SWITCHBOARD_ATTEMPTS_RETAINED": "5"}, "unknown setting"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings({**TOKEN, **env})


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("yes", True), ("on", True), ("1", True), ("TRUE", True), ("no", False), ("Off", False)],
)
def test_bools_take_the_usual_spellings(spelling: str, expected: bool) -> None:
    s = load_settings({**TOKEN, "SWITCHBOARD_ALLOW_HTTP": spelling})
    assert s.allow_http is expected


def test_a_bool_that_is_none_of_them_lists_the_spellings() -> None:
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_ALLOW_HTTP.*yes/no, on/off"):
        load_settings({**TOKEN, "SWITCHBOARD_ALLOW_HTTP": "sure"})


def test_choices_take_any_case_and_list_the_values() -> None:
    s = load_settings(
        {**TOKEN, "SWITCHBOARD_LOG_LEVEL": "DEBUG", "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "ssl"}
    )
    assert (s.log_level, s.kafka_security_protocol) == ("debug", "SSL")
    with pytest.raises(ConfigError, match="SWITCHBOARD_LOG_LEVEL: 'loud' is not one of debug"):
        load_settings({**TOKEN, "SWITCHBOARD_LOG_LEVEL": "loud"})


def test_an_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean SWITCHBOARD_ALLOW_HTTP"):
        load_settings({**TOKEN, "SWITCHBOARD_ALLOW_HTTPS": "true"})


def test_portal_settings_are_validated() -> None:
    s = load_settings({**TOKEN, "SWITCHBOARD_PORTAL_FRAME_ANCESTORS": "https://app.example.com",
                       "SWITCHBOARD_PORTAL_COOKIE_SAMESITE": "none"})  # fmt: skip
    assert s.portal_frame_ancestors == ("https://app.example.com",)
    assert s.portal_cookie_samesite == "None"
    assert s.portal_cookie_secure
    # Anything that could end the CSP directive, or is no origin, is refused.
    for bad in ("app.example.com", "https://a.example.com; script-src *", "'self'"):
        with pytest.raises(ConfigError, match="SWITCHBOARD_PORTAL_FRAME_ANCESTORS"):
            load_settings({**TOKEN, "SWITCHBOARD_PORTAL_FRAME_ANCESTORS": bad})
    # Browsers drop a SameSite=None cookie that is not Secure.
    with pytest.raises(ConfigError, match="SWITCHBOARD_PORTAL_COOKIE_SAMESITE"):
        load_settings({**TOKEN, "SWITCHBOARD_PORTAL_COOKIE_SAMESITE": "None",
                       "SWITCHBOARD_PORTAL_COOKIE_SECURE": "false"})  # fmt: skip
    with pytest.raises(ConfigError, match="SWITCHBOARD_PORTAL_PUBLIC_URL"):
        load_settings({**TOKEN, "SWITCHBOARD_PORTAL_PUBLIC_URL": "hooks.example.com"})
