"""RateLimiter against a real Redis: a fixed window per user, Retry-After from what is left of
the window, and fail open when Redis cannot be reached."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from quart_gateway.admission.ratelimit import RateLimiter
from quart_gateway.errors import RateLimitedError
from quart_gateway.ops.metrics import Metrics
from quart_gateway.settings import RateLimit
from tests.support import unreachable_redis, wait_until


@pytest.fixture(name="scope")
def _scope() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_the_request_over_the_limit_is_refused_with_the_rest_of_the_window(
    redis: aioredis.Redis, scope: str, user_id: str
) -> None:
    metrics = Metrics()
    limiter = RateLimiter(redis, RateLimit(limit=3, period_s=60), metrics, scope=scope)
    for _ in range(3):
        await limiter.hit(user_id)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.hit(user_id)
    # The window opened a moment ago: nearly all of its 60 s are left, rounded up.
    assert 59 <= refused.value.retry_after <= 60
    assert refused.value.headers() == {"Retry-After": str(refused.value.retry_after)}
    assert refused.value.status_code == 429
    with pytest.raises(RateLimitedError):
        await limiter.hit(user_id)  # still refused: refusals count too
    assert sample(metrics, "gateway_rate_limited_total") == 2
    assert await redis.get(f"ratelimit:{scope}:{user_id}") == b"5"
    assert 0 < await redis.pttl(f"ratelimit:{scope}:{user_id}") <= 60_000


async def test_users_and_scopes_are_counted_apart(
    redis: aioredis.Redis, scope: str, user_id: str
) -> None:
    rate = RateLimit(limit=1, period_s=60)
    limiter = RateLimiter(redis, rate, Metrics(), scope=scope)
    other_scope = RateLimiter(redis, rate, Metrics(), scope=f"{scope}-other")
    await limiter.hit(user_id)
    await limiter.hit(f"{user_id}-other")
    await other_scope.hit(user_id)
    with pytest.raises(RateLimitedError):
        await limiter.hit(user_id)


async def test_a_new_window_starts_when_the_last_one_ends(
    redis: aioredis.Redis, scope: str, user_id: str
) -> None:
    limiter = RateLimiter(redis, RateLimit(limit=1, period_s=1), Metrics(), scope=scope)
    await limiter.hit(user_id)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.hit(user_id)
    assert refused.value.retry_after == 1
    key = f"ratelimit:{scope}:{user_id}"

    async def window_ended() -> bool:
        return not await redis.exists(key)  # the counter expires with its window

    await wait_until(window_ended, timeout=3)
    await limiter.hit(user_id)
    assert await redis.get(key) == b"1"


async def test_a_key_that_lost_its_expiry_gets_one_again(
    redis: aioredis.Redis, scope: str, user_id: str
) -> None:
    key = f"ratelimit:{scope}:{user_id}"
    await redis.set(key, 1)  # e.g. written by hand, or left by an older version
    limiter = RateLimiter(redis, RateLimit(limit=5, period_s=60), Metrics(), scope=scope)
    await limiter.hit(user_id)
    assert await redis.get(key) == b"2"
    assert 0 < await redis.pttl(key) <= 60_000


async def test_an_unreachable_redis_lets_requests_through_and_is_counted(user_id: str) -> None:
    client = unreachable_redis()
    metrics = Metrics()
    limiter = RateLimiter(client, RateLimit(limit=1, period_s=60), metrics, scope="down")
    try:
        for _ in range(3):  # past the limit, and still allowed
            await limiter.hit(user_id)
    finally:
        await client.aclose()
    assert sample(metrics, "gateway_redis_errors_total", operation="rate_limit") == 3
    assert sample(metrics, "gateway_rate_limited_total") == 0
