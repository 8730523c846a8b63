"""API keys on every request (when AUTH_REQUIRED is on), and each key's limits.

An ASGI middleware, outside the finished-job cache and admission control: a request without a
usable `Authorization: Bearer <key>` is a 401 (`WWW-Authenticate: Bearer`, with
`error="invalid_token"` when a key was given) before anything else looks at it; `/health`,
`/health/ready` and `/metrics` need none. The key's id goes into the request's scope
(app/api/clients.py): the routes and the finished-job cache answer each client with its own jobs
only.

The keys themselves are not looked up per request: each process keeps a copy of every usable key
(`KeyDirectory`: prefix -> the records with that prefix), read from PostgreSQL when it is older
than API_KEY_CACHE_SECONDS, so a new or revoked key takes effect within that (plus one read)
without a restart, and a request costs a dict lookup and a constant-time comparison of SHA-256
digests. A wrong key costs no database read, however many are tried. When PostgreSQL does not
answer a reread, the copy in hand goes on serving until it does (a revocation waits for it too);
without any copy, the request is a 503. Requests that find the copy stale wait for one reread
together.

Then the key's limits, the key's own or the settings' defaults: at most `max_concurrent` of its
requests in flight in this process (a counter, no round trip), and its rate across the stack
(app/api/rate_limit.py, one Redis round trip); beyond either, 429 with `Retry-After`. A refused
request is not counted against the rate.
"""

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.clients import CLIENT_ID
from app.api.deps import get_broker_client
from app.api.rate_limit import RateLimiter
from app.config import Settings, get_settings
from app.storage import api_keys, pg

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/health/ready", "/metrics"})
REALM = 'Bearer realm="taskstack"'
# How soon a process retries reading the keys after PostgreSQL did not answer.
RETRY_READ_SECONDS = 0.5


@dataclass(frozen=True)
class Client:
    """A usable key with its limits resolved."""

    id: int
    key_hash: bytes = field(repr=False)  # never in a log line, not even the hash
    rate_per_second: float
    burst: int
    max_concurrent: int


def _clients(keys: Iterable[api_keys.ActiveKey], settings: Settings) -> dict[str, list[Client]]:
    by_prefix: dict[str, list[Client]] = {}
    for key in keys:
        by_prefix.setdefault(key.prefix, []).append(
            Client(
                key.id,
                key.key_hash,
                key.rate_per_second or settings.api_key_rate_per_second,
                key.burst or settings.api_key_burst,
                key.max_concurrent or settings.api_key_max_concurrent,
            )
        )
    return by_prefix


class KeyDirectory:
    """This process's copy of the usable keys (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.by_prefix: dict[str, list[Client]] = {}
        self.loaded = False
        self.fresh_until = 0.0
        # The reread under way: every request that finds the copy stale waits for this one read.
        self.reading: asyncio.Task[None] | None = None

    async def find(self, key: str) -> Client | None:
        """The client whose key this is, or None (unknown, revoked)."""
        if time.monotonic() >= self.fresh_until:
            await self._reread()
        digest = api_keys.key_hash(key)
        found = None
        for client in self.by_prefix.get(api_keys.key_prefix(key), ()):
            if hmac.compare_digest(client.key_hash, digest):
                found = client
        return found

    def expire(self) -> None:
        """Reread the keys on the next request (tests; a key just made)."""
        self.fresh_until = 0.0

    async def _reread(self) -> None:
        loop = asyncio.get_running_loop()
        reading = self.reading
        if reading is None or reading.done() or reading.get_loop() is not loop:
            reading = self.reading = loop.create_task(self._read())
        # Shielded: a request that goes away does not cancel the others' read.
        await asyncio.shield(reading)

    async def _read(self) -> None:
        try:
            async with pg.connection() as connection:
                keys = await api_keys.active_keys(connection)
        except pg.DatabaseUnavailable as error:
            if not self.loaded:
                raise
            self.fresh_until = time.monotonic() + RETRY_READ_SECONDS
            logger.warning("API keys not reread, the copy in hand serves: %s", error)
            return
        self.by_prefix = _clients(keys, self.settings)
        self.loaded = True
        self.fresh_until = time.monotonic() + self.settings.api_key_cache_seconds


@lru_cache
def get_key_directory() -> KeyDirectory:
    """The process's copy of the keys."""
    return KeyDirectory(get_settings())


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None


class Authentication:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight: dict[int, int] = {}
        self._limiter: RateLimiter | None = None

    def limiter(self) -> RateLimiter:
        redis = get_broker_client()
        if self._limiter is None or self._limiter.redis is not redis:
            self._limiter = RateLimiter(redis)
        return self._limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = bearer_token(scope)
        if key is None:
            await _refuse(
                send,
                401,
                "an API key is required: Authorization: Bearer <key>",
                [(b"www-authenticate", REALM.encode())],
            )
            return
        try:
            client = await get_key_directory().find(key)
        except pg.DatabaseUnavailable:
            await _refuse(
                send,
                503,
                "database unavailable: the API keys cannot be read",
                [(b"retry-after", b"1")],
            )
            return
        if client is None:
            challenge = f'{REALM}, error="invalid_token"'.encode()
            await _refuse(
                send, 401, "invalid or revoked API key", [(b"www-authenticate", challenge)]
            )
            return
        in_flight = self.in_flight.get(client.id, 0)
        if in_flight >= client.max_concurrent:
            await _refuse(
                send,
                429,
                f"{client.max_concurrent} requests of this key in flight",
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight[client.id] = in_flight + 1
        try:
            wait = await self.limiter().retry_after(client.id, client.rate_per_second, client.burst)
            if wait:
                await _refuse(
                    send,
                    429,
                    f"this key's rate is {client.rate_per_second:g} requests a second",
                    [(b"retry-after", str(wait).encode())],
                )
                return
            scope[CLIENT_ID] = client.id
            await self.app(scope, receive, send)
        finally:
            remaining = self.in_flight[client.id] - 1
            if remaining:
                self.in_flight[client.id] = remaining
            else:
                del self.in_flight[client.id]


async def _refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
