"""GET /task answers for finished jobs, kept in memory: a finished job never changes again.

Every state change in `app.storage.jobs` excludes finished rows (`succeeded`, `failed`), so once
GET /task has read a finished job its answer is final, and polling it again needs no round trip. The
one thing that removes a finished job is the purge (`purge_finished_jobs`: finished more than
JOB_RETENTION_DAYS ago); an entry is served only until that moment, then the row is read again (and
is a 404 once purged). Bounded: at most FINISHED_JOB_CACHE_SIZE entries per API process, the least
recently read dropped first; 0 turns the cache off.

Each entry is one client's (app/api/clients.py): it is keyed by the client and the job, so a
client is never answered from another's entry; a job is only put there once its owner read it.

The answer says the same to the caches in front (`cache_control`): a finished job's may be kept
until its purge, by any cache (`public`) while AUTH_REQUIRED is off, so the proxy answers the polls
it has seen (infra/haproxy.cfg.tmpl, `cache`) without a hop to a copy, and only by the client's
own (`private`) when the answer is a client's; anything else is `no-store`. With the cache off,
every answer is `no-store`.
"""

import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.clients import client_id_of
from app.config import get_settings
from app.metrics.api import ROUTE_TEMPLATE_KEY
from app.storage.models import ANONYMOUS_CLIENT

TASK_PREFIX = "/task/"
TASK_ROUTE = "/task/{task_id}"
# An answer that may change (an unfinished or unknown job), or one this process does not keep.
NO_STORE = "no-store"


def cache_control(purgeable_at: datetime, now: datetime, client_id: int) -> str:
    """A finished job's answer: a cache may keep it until the purge may delete the job; only the
    client's own cache when it is a client's."""
    seconds_left = max(0, int((purgeable_at - now).total_seconds()))
    scope = "public" if client_id == ANONYMOUS_CLIENT else "private"
    return f"{scope}, max-age={seconds_left}, immutable"


# The client and the job.
EntryKey = tuple[int, uuid.UUID]


class FinishedJobCache:
    """An LRU map from (client id, job id) to the job's final GET /task body, each entry valid
    until its purge."""

    def __init__(self, max_entries: int, retention: timedelta) -> None:
        self.max_entries = max_entries
        self.retention = retention
        self._entries: OrderedDict[EntryKey, tuple[bytes, datetime]] = OrderedDict()

    def get(self, key: EntryKey, now: datetime) -> bytes | None:
        entry = self.entry(key, now)
        return None if entry is None else entry[0]

    def entry(self, key: EntryKey, now: datetime) -> tuple[bytes, datetime] | None:
        """The job's answer and the moment the purge may delete it, while that is ahead."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry[1]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: EntryKey, body: bytes, finished_at: datetime) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = (body, finished_at + self.retention)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@lru_cache
def get_finished_job_cache() -> FinishedJobCache:
    """The process's cache (FastAPI dependency; one per API process)."""
    settings = get_settings()
    return FinishedJobCache(
        settings.finished_job_cache_size, timedelta(days=settings.job_retention_days)
    )


class FinishedTaskFastPath:
    """ASGI middleware: GET /task/{id} of a finished job in the cache is answered before routing.

    The same bytes the route returns (`app.api.routes.task_status` fills the cache), without
    FastAPI's routing, dependency resolution and validation, which cost more than the answer.
    Anything else (another path, a malformed or unknown id, an unfinished job) goes on to the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            # Only the canonical 36-character form: the route would validate it the same way.
            if path.startswith(TASK_PREFIX) and len(path) == len(TASK_PREFIX) + 36:
                now = datetime.now(UTC)
                client_id = client_id_of(scope)
                entry = self._cached(client_id, path[len(TASK_PREFIX) :], now)
                if entry is not None:
                    scope[ROUTE_TEMPLATE_KEY] = TASK_ROUTE  # for app/metrics/api.py
                    body, purgeable_at = entry
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json"),
                                (
                                    b"cache-control",
                                    cache_control(purgeable_at, now, client_id).encode(),
                                ),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _cached(client_id: int, task_id: str, now: datetime) -> tuple[bytes, datetime] | None:
        try:
            job_id = uuid.UUID(task_id)
        except ValueError:
            return None
        return get_finished_job_cache().entry((client_id, job_id), now)
