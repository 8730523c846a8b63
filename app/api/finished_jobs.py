"""GET /task answers for finished jobs, kept in memory: a finished job never changes again.

Every state change in `app.storage.jobs` excludes finished rows (`succeeded`, `failed`), so once
GET /task has read a finished job its answer is final, and polling it again needs no round trip. The
one thing that removes a finished job is the purge (`purge_finished_jobs`: finished more than
JOB_RETENTION_DAYS ago); an entry is served only until that moment, then the row is read again (and
is a 404 once purged). Bounded: at most FINISHED_JOB_CACHE_SIZE entries per API process, the least
recently read dropped first; 0 turns the cache off.

The answer says the same to the caches in front (`cache_control`): a finished job's may be kept
until its purge, so the proxy answers the polls it has seen (infra/haproxy.cfg.tmpl, `cache`)
without a hop to a copy; anything else is `no-store`. With the cache off, every answer is
`no-store`.
"""

import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import get_settings
from app.metrics.api import ROUTE_TEMPLATE_KEY

TASK_PREFIX = "/task/"
TASK_ROUTE = "/task/{task_id}"
# An answer that may change (an unfinished or unknown job), or one this process does not keep.
NO_STORE = "no-store"


def cache_control(purgeable_at: datetime, now: datetime) -> str:
    """A finished job's answer: any cache may keep it until the purge may delete the job."""
    seconds_left = max(0, int((purgeable_at - now).total_seconds()))
    return f"public, max-age={seconds_left}, immutable"


class FinishedJobCache:
    """An LRU map from job id to its final GET /task body, each entry valid until its purge."""

    def __init__(self, max_entries: int, retention: timedelta) -> None:
        self.max_entries = max_entries
        self.retention = retention
        self._entries: OrderedDict[uuid.UUID, tuple[bytes, datetime]] = OrderedDict()

    def get(self, job_id: uuid.UUID, now: datetime) -> bytes | None:
        entry = self.entry(job_id, now)
        return None if entry is None else entry[0]

    def entry(self, job_id: uuid.UUID, now: datetime) -> tuple[bytes, datetime] | None:
        """The job's answer and the moment the purge may delete it, while that is ahead."""
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        if now >= entry[1]:
            del self._entries[job_id]
            return None
        self._entries.move_to_end(job_id)
        return entry

    def put(self, job_id: uuid.UUID, body: bytes, finished_at: datetime) -> None:
        if self.max_entries == 0:
            return
        self._entries[job_id] = (body, finished_at + self.retention)
        self._entries.move_to_end(job_id)
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
                entry = self._cached(path[len(TASK_PREFIX) :], now)
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
                                (b"cache-control", cache_control(purgeable_at, now).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _cached(task_id: str, now: datetime) -> tuple[bytes, datetime] | None:
        try:
            job_id = uuid.UUID(task_id)
        except ValueError:
            return None
        return get_finished_job_cache().entry(job_id, now)
