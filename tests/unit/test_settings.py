from __future__ import annotations

import pytest

from quart_gateway.errors import ConfigError
from quart_gateway.settings import RateLimit, Secret, Settings

BASE = {"JWT_SECRET_KEY": "k" * 32}


def test_defaults_follow_the_contract() -> None:
    s = Settings.from_env(BASE)
    assert s.port == 8000
    assert s.web_concurrency == 1
    assert s.redis_url is None  # embedded mode
    assert s.jwt_algorithm == "HS256"
    assert s.result_aggregator_url == "http://result_aggregator_service:8000"
    assert s.bos_url == "http://batch_orchestrator_service:8000"
    assert s.handle_missing_batches == "query_bos"
    assert s.upstream_timeout_seconds == 5
    assert s.service_id == "api-gateway-service"
    assert s.internal_api_key is None
    assert s.status_rate_limit == RateLimit(50, 60)
    assert s.heartbeat_interval_seconds == 15
    assert s.max_connections_per_user == 10
    assert s.cors_origins == ()
    assert (s.log_level, s.log_format) == ("INFO", "json")


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env(
        {
            **BASE,
            "PORT": "9001",
            "WEB_CONCURRENCY": "3",
            "REDIS_URL": "rediss://:pw@example.internal:6380",
            "HANDLE_MISSING_BATCHES": "return_404",
            "UPSTREAM_TIMEOUT_SECONDS": "0.5",
            "STATUS_RATE_LIMIT": "5/second",
            "CORS_ORIGINS": "http://localhost:5173, https://app.example.com/",
            "LOG_LEVEL": "debug",
            "RESULT_AGGREGATOR_URL": "http://agg:9000/",
        }
    )
    assert s.port == 9001
    assert s.web_concurrency == 3
    assert str(s.redis_url) == "rediss://:pw@example.internal:6380"
    assert s.handle_missing_batches == "return_404"
    assert s.upstream_timeout_seconds == 0.5
    assert s.status_rate_limit == RateLimit(5, 1)
    assert s.cors_origins == ("http://localhost:5173", "https://app.example.com")
    assert s.log_level == "DEBUG"
    assert s.result_aggregator_url == "http://agg:9000"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "JWT_SECRET_KEY"),
        ({**BASE, "PORT": "eighty"}, "PORT"),
        ({**BASE, "PORT": "70000"}, "PORT"),
        ({**BASE, "WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({**BASE, "REDIS_URL": "http://nope"}, "REDIS_URL"),
        ({**BASE, "JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_ALGORITHM": "RS256"}, "JWT_PUBLIC_KEY"),
        ({**BASE, "HANDLE_MISSING_BATCHES": "guess"}, "HANDLE_MISSING_BATCHES"),
        ({**BASE, "UPSTREAM_TIMEOUT_SECONDS": "nan"}, "UPSTREAM_TIMEOUT_SECONDS"),
        ({**BASE, "UPSTREAM_TIMEOUT_SECONDS": "-1"}, "UPSTREAM_TIMEOUT_SECONDS"),
        ({**BASE, "STATUS_RATE_LIMIT": "lots"}, "STATUS_RATE_LIMIT"),
        ({**BASE, "STATUS_RATE_LIMIT": "0/minute"}, "STATUS_RATE_LIMIT"),
        ({**BASE, "STATUS_RATE_LIMIT": "10/0minute"}, "STATUS_RATE_LIMIT"),
        ({**BASE, "HEARTBEAT_INTERVAL_SECONDS": "0"}, "HEARTBEAT_INTERVAL_SECONDS"),
        ({**BASE, "RESULT_AGGREGATOR_URL": "agg:8000"}, "RESULT_AGGREGATOR_URL"),
        ({**BASE, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({**BASE, "GATEWAY_DEV_MODE": "perhaps"}, "GATEWAY_DEV_MODE"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)


def test_redis_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "REDIS_URL": "http://user:hunter2@host"})
    assert "hunter2" not in str(info.value)


def test_secrets_are_masked_in_reprs() -> None:
    s = Settings.from_env(
        {
            "JWT_SECRET_KEY": "super-secret-signing-key-000000000",
            "REDIS_URL": "redis://:hunter2@host:6379",
            "INTERNAL_API_KEY": "internal-key-123",
        }
    )
    text = repr(s)
    for secret in ("super-secret-signing-key", "hunter2", "internal-key-123"):
        assert secret not in text
    assert str(s.jwt_secret_key) == "super-secret-signing-key-000000000"
    assert repr(Secret("x")) == "Secret('**********')"


def test_public_key_from_a_one_line_config_var() -> None:
    s = Settings.from_env(
        {"JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": "-----BEGIN-----\\nabc\\n-----END-----"}
    )
    assert s.jwt_public_key == "-----BEGIN-----\nabc\n-----END-----"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50/minute", RateLimit(50, 60)),
        ("1/second", RateLimit(1, 1)),
        ("100 / hour", RateLimit(100, 3600)),
        ("10/5minutes", RateLimit(10, 300)),
        ("7/day", RateLimit(7, 86400)),
    ],
)
def test_rate_limit_parsing(text: str, expected: RateLimit) -> None:
    assert RateLimit.parse(text) == expected


def test_dev_mode_only_in_embedded_single_node_mode() -> None:
    assert Settings.from_env({**BASE, "GATEWAY_DEV_MODE": "true"}).dev_mode is True
    assert Settings.from_env({**BASE, "REDIS_URL": "redis://r:6379"}).dev_mode is False
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "GATEWAY_DEV_MODE": "true", "REDIS_URL": "redis://r:6379"})
    assert raised.value.variable == "GATEWAY_DEV_MODE"
    assert "REDIS_URL" in str(raised.value)


def test_sentinel_mode_needs_sentinels() -> None:
    base = {"JWT_SECRET_KEY": "k", "REDIS_MODE": "sentinel"}
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        Settings.from_env(base)
    settings = Settings.from_env(
        {
            **base,
            "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380",
            "REDIS_SENTINEL_PASSWORD": "p",
        }
    )
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert settings.redis_sentinel_service == "mymaster"
    assert not settings.embedded  # no REDIS_URL, but not embedded either
    assert "sentinel-secret" not in repr(settings)


@pytest.mark.parametrize("value", ["nohost", "h:", ":1", "h:99999", "h:x"])
def test_sentinel_addresses_are_checked(value: str) -> None:
    env = {"JWT_SECRET_KEY": "k", "REDIS_MODE": "sentinel", "REDIS_SENTINELS": value}
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        Settings.from_env(env)


def test_cluster_mode_needs_a_node_url() -> None:
    base = {"JWT_SECRET_KEY": "k", "REDIS_MODE": "cluster"}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env(base)
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({**base, "REDIS_URL": "unix:///tmp/redis.sock"})
    settings = Settings.from_env({**base, "REDIS_URL": "redis://node-3:7002"})
    assert settings.redis_mode == "cluster"
    assert not settings.embedded
