"""Each API key's request rate, across the whole stack: a GCRA in Redis, one round trip a request.

Why in Redis and not in each process: the API runs as several copies of several uvicorn
processes, and a client's requests spread over all of them; a per-process limit would have to be
the key's rate divided by a number of processes no process knows, and would still let a client
whose connections land unevenly through at several times its rate. One atomic script on the
stack's Redis (GCRA: the key's "theoretical arrival time", one value per key, expiring when it is
idle) holds every process to the key's one rate, and says how long to wait when it is exceeded.
The concurrency limit stays per process (app/api/auth.py): what it protects, the process's
admission slots and connections, is per process, and counting it costs no round trip.

When Redis does not answer within RATE_CHECK_TIMEOUT_SECONDS the request is let through, and the
limit is skipped for SKIP_AFTER_FAILURE_SECONDS: the API keeps accepting jobs while Redis is away
(the outbox), and the per-process bounds still hold.
"""

import asyncio
import logging
import math
import time

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RATE_CHECK_TIMEOUT_SECONDS = 0.25
SKIP_AFTER_FAILURE_SECONDS = 1.0
KEY_PREFIX = "taskstack:rate:"

# KEYS[1]: the key's theoretical arrival time, in microseconds of Redis's clock.
# ARGV[1]: the emission interval (microseconds a request), ARGV[2]: the burst.
# Returns 0 (admitted, counted) or the microseconds until a request would be admitted.
GCRA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - interval * tonumber(ARGV[2])
if allowed_at > now then
    return allowed_at - now
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
"""


class RateLimiter:
    """The keys' rates in one Redis (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.script: AsyncScript = redis.register_script(GCRA)
        self.skip_until = 0.0

    async def retry_after(self, client_id: int, rate_per_second: float, burst: int) -> int:
        """0 when the request is within the key's rate (and counted), else the whole seconds
        (at least 1) to wait before the next one would be."""
        if time.monotonic() < self.skip_until:
            return 0
        interval = max(1, round(1_000_000 / rate_per_second))
        try:
            async with asyncio.timeout(RATE_CHECK_TIMEOUT_SECONDS):
                wait = await self.script(keys=[f"{KEY_PREFIX}{client_id}"], args=[interval, burst])
        except (RedisError, OSError, TimeoutError) as error:
            self.skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
            logger.warning(
                "rate limits skipped for %g s: Redis did not answer: %s: %s",
                SKIP_AFTER_FAILURE_SECONDS,
                type(error).__name__,
                error,
            )
            return 0
        return 0 if not wait else max(1, math.ceil(int(wait) / 1_000_000))
