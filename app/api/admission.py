"""Admission control: each API process serves a bounded number of requests at once.

Under more load than a process can serve, the requests beyond its bound are answered at once with
`503` and `Retry-After` instead of queueing for a database connection, holding memory and timing
out as 500s. The bound also bounds memory: a request holds at most a page of `/jobs` (500 rows) or a
small body, so `MAX_CONCURRENT_REQUESTS` light requests plus `MAX_CONCURRENT_JOB_LISTS` pages is the
most a process builds at once (docs/app.md, "Overload").

A plain ASGI middleware: two counters on the process's event loop, no lock, nothing awaited on the
admitted path (its cost is measured in RELIABILITY.md, "Overload and slow clients"). A finished
job's cached `GET /task` answer is served before it (app/api/finished_jobs.py: no database, no
page). The health endpoints and `/metrics` are never refused: a process that sheds load still
says whether it can serve (`/health/ready` checks its pools within `READINESS_TIMEOUT_SECONDS`)
and what it is doing.
"""

import json

from starlette.types import ASGIApp, Receive, Scope, Send

HEALTH_PREFIX = "/health"
METRICS_PATH = "/metrics"
JOB_LIST_PATH = "/jobs"
RETRY_AFTER_SECONDS = 1


class AdmissionLimit:
    """At most `max_requests` requests in flight in this process, of which at most `max_job_lists`
    are `GET /jobs` pages; anything over is `503 Retry-After: 1` before routing."""

    def __init__(self, app: ASGIApp, max_requests: int, max_job_lists: int) -> None:
        self.app = app
        self.max_requests = max_requests
        self.max_job_lists = max_job_lists
        self.in_flight = 0
        self.job_lists_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        if not path or path.startswith(HEALTH_PREFIX) or path == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        job_list = path == JOB_LIST_PATH
        if self.in_flight >= self.max_requests:
            await _overloaded(send, f"{self.max_requests} requests in flight")
            return
        if job_list and self.job_lists_in_flight >= self.max_job_lists:
            await _overloaded(send, f"{self.max_job_lists} job lists in flight")
            return
        self.in_flight += 1
        self.job_lists_in_flight += job_list
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.job_lists_in_flight -= job_list


async def _overloaded(send: Send, reason: str) -> None:
    body = json.dumps({"detail": f"overloaded: {reason} in this process; retry"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
