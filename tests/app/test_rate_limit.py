"""The keys' rate checks (app/api/rate_limit.py) against the run's own Redis db."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.api.rate_limit import RateLimiter
from tests.app.environment import TEST_ENV

pytestmark = pytest.mark.anyio


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_ENV["REDIS_URL"])
    try:
        yield client
    finally:
        await client.aclose()


def client_id() -> int:
    """A key id of this test's own: the rate keys of other tests are not touched."""
    return uuid.uuid4().int % 2**31


async def test_requests_at_once_are_checked_in_batches_with_each_ones_verdict(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(redis)
    calls: list[int] = []
    script = limiter.script

    async def counted(*, keys: list[str], args: list[int]) -> object:
        calls.append(len(keys))
        return await script(keys=keys, args=args)

    monkeypatch.setattr(limiter, "script", counted)
    limited, other = client_id(), client_id()
    # A burst of 5 at one request per 100 s: 5 of the 40 get in, the other 35 wait; another key
    # in the same batches is not held back by it.
    verdicts = await asyncio.gather(
        *(limiter.retry_after(limited, 0.01, 5) for _ in range(40)),
        *(limiter.retry_after(other, 1000, 100) for _ in range(10)),
    )
    assert verdicts[:5] == [0] * 5
    assert all(wait >= 90 for wait in verdicts[5:40]), verdicts
    assert verdicts[40:] == [0] * 10
    # Every request checked once, many per call.
    assert sum(calls) == 50
    assert len(calls) < 50, calls


async def test_a_lone_request_is_checked_at_once_and_counted(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    limited = client_id()
    assert await limiter.retry_after(limited, 0.01, 1) == 0
    assert await limiter.retry_after(limited, 0.01, 1) >= 90


async def test_without_redis_requests_get_in_and_the_limit_is_skipped_a_while() -> None:
    # A port nothing listens on: the check fails and everyone waiting is let through.
    unreachable = Redis.from_url("redis://127.0.0.1:1/0")
    limiter = RateLimiter(unreachable)
    try:
        verdicts = await asyncio.gather(*(limiter.retry_after(1, 0.01, 1) for _ in range(5)))
        assert verdicts == [0] * 5
        assert limiter.skip_until > 0
    finally:
        await unreachable.aclose()
