"""Each API key's request rate, across the whole stack: a GCRA in Redis, checked in batches.

Why in Redis and not in each process: the API runs as several copies of several uvicorn
processes, and a client's requests spread over all of them; a per-process limit would have to be
the key's rate divided by a number of processes no process knows, and would still let a client
whose connections land unevenly through at several times its rate. One atomic script on the
stack's Redis (GCRA: the key's "theoretical arrival time", one value per key, expiring when it is
idle) holds every process to the key's one rate, and says how long to wait when it is exceeded.
The concurrency limit stays per process (app/api/auth.py): what it protects, the process's
admission slots and connections, is per process, and counting it costs no round trip.

A process checks in batches, as it commits jobs (app/intake/group_commit.py): a lone request is
checked at once; requests arriving while a check is on the wire wait for the next one, which
checks all of them, in their order, with one call of the script. Under load that is one round trip
for many requests, with the verdicts that one call each would have given.

When Redis does not answer within RATE_CHECK_TIMEOUT_SECONDS the request is let through, and the
limit is skipped for SKIP_AFTER_FAILURE_SECONDS: the API keeps accepting jobs while Redis is away
(the outbox), and the per-process bounds still hold.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RATE_CHECK_TIMEOUT_SECONDS = 0.25
SKIP_AFTER_FAILURE_SECONDS = 1.0
KEY_PREFIX = "taskstack:rate:"

# The requests of one batch, in order: KEYS[i] is request i's key's theoretical arrival time (in
# microseconds of Redis's clock); ARGV[2i-1] its emission interval (microseconds a request),
# ARGV[2i] its burst. Returns, per request, 0 (admitted, counted) or the microseconds until a
# request of that key would be admitted. A key named twice sees the first request's effect.
GCRA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tats = {}
local waits = {}
for i, key in ipairs(KEYS) do
    local interval = tonumber(ARGV[2 * i - 1])
    local tat = tats[key]
    if tat == nil then tat = tonumber(redis.call('GET', key) or now) end
    if tat < now then tat = now end
    local next_tat = tat + interval
    local allowed_at = next_tat - interval * tonumber(ARGV[2 * i])
    if allowed_at > now then
        waits[i] = allowed_at - now
        tats[key] = tat
    else
        waits[i] = 0
        tats[key] = next_tat
        redis.call('SET', key, string.format('%d', next_tat), 'PX',
            math.ceil((next_tat - now) / 1000))
    end
end
return waits
"""
# The most requests one call checks; more wait for the next.
MAX_BATCH = 256


@dataclass
class _Check:
    key: str
    interval: int
    burst: int
    verdict: asyncio.Future[int]


class RateLimiter:
    """The keys' rates in one Redis (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.script: AsyncScript = redis.register_script(GCRA)
        self.skip_until = 0.0
        self.waiting: list[_Check] = []
        self.on_the_wire: list[_Check] = []
        self.checking: asyncio.Task[None] | None = None

    async def retry_after(self, client_id: int, rate_per_second: float, burst: int) -> int:
        """0 when the request is within the key's rate (and counted), else the whole seconds
        (at least 1) to wait before the next one would be."""
        if time.monotonic() < self.skip_until:
            return 0
        loop = asyncio.get_running_loop()
        check = _Check(
            f"{KEY_PREFIX}{client_id}",
            max(1, round(1_000_000 / rate_per_second)),
            burst,
            loop.create_future(),
        )
        self.waiting.append(check)
        if self.checking is None or self.checking.done() or self.checking.get_loop() is not loop:
            self.checking = loop.create_task(self._check_waiting())
        wait = await check.verdict
        return 0 if not wait else max(1, math.ceil(wait / 1_000_000))

    async def _check_waiting(self) -> None:
        """Check what is waiting, one call per batch, until nothing is."""
        try:
            await self._check_batches()
        finally:
            # Cancelled (the loop shutting down) or failed unexpectedly: nobody is left waiting.
            for check in [*self.on_the_wire, *self.waiting]:
                if not check.verdict.done():
                    check.verdict.set_result(0)
            self.on_the_wire, self.waiting = [], []

    async def _check_batches(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            self.on_the_wire = batch
            args: list[int] = []
            for check in batch:
                args += (check.interval, check.burst)
            try:
                async with asyncio.timeout(RATE_CHECK_TIMEOUT_SECONDS):
                    waits = await self.script(keys=[check.key for check in batch], args=args)
            except (RedisError, OSError, TimeoutError) as error:
                self.skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
                logger.warning(
                    "rate limits skipped for %g s: Redis did not answer: %s: %s",
                    SKIP_AFTER_FAILURE_SECONDS,
                    type(error).__name__,
                    error,
                )
                waits = [0] * len(batch)
            for check, wait in zip(batch, waits, strict=True):
                if not check.verdict.done():  # its request may have gone away meanwhile
                    check.verdict.set_result(int(wait))
