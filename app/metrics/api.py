"""The API's metrics: HTTP requests (`HttpMetrics`, a plain ASGI middleware) and the intake's
counters. `GET /metrics` serves them (app/api/routes/metrics.py)."""

import contextlib
import re
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics as _setup  # noqa: F401 - makes PROMETHEUS_MULTIPROC_DIR before the values below

METRICS_PATH = "/metrics"
HEALTH_PREFIX = "/health"
# A request no route matched (404s): one label value, whatever the path.
UNMATCHED_ROUTE = "other"
# Set in the scope by a middleware that answers before routing (app/api/finished_jobs.py) to
# name the route it answered for.
ROUTE_TEMPLATE_KEY = "taskstack.route"

# The API answers in about 1-50 ms; the tail (a pool wait, a 2 s bound) lands in the top buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

HTTP_REQUESTS = Counter(
    "taskstack_http_requests_total",
    "Requests answered (not /metrics nor /health*)",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "taskstack_http_request_duration_seconds",
    "Time from the request's arrival to its answer",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "taskstack_http_requests_in_flight",
    "Requests being answered now",
    # The processes that are alive, added up: a process that ended counts for nothing.
    multiprocess_mode="livesum",
)
GROUP_COMMIT_BATCH = Histogram(
    "taskstack_group_commit_batch_size",
    "Jobs committed per group-commit transaction",
    buckets=BATCH_BUCKETS,
)
IDEMPOTENT_REPLAYS = Counter(
    "taskstack_idempotent_replays_total",
    "POSTs answered from an earlier request with the same Idempotency-Key",
)
JOBS_ENQUEUED = Counter(
    "taskstack_jobs_enqueued_total",
    "Jobs whose row was committed (a 202); replays are not counted",
)


class HttpMetrics:
    """ASGI middleware (outermost): counts each request by its route template, method and
    status, times it, and counts those in flight. `/metrics` and `/health*` are not recorded:
    scrapes and probes would otherwise drown the traffic they describe."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Label children looked up once: `.labels()` takes a lock and builds a key each time.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == METRICS_PATH or path.startswith(HEALTH_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any answer: the server's error page

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            HTTP_IN_FLIGHT.dec()
            route = self._route(scope)
            method: str = scope["method"]
            counter = self._counters.get((route, method, status))
            if counter is None:
                counter = self._counters[(route, method, status)] = HTTP_REQUESTS.labels(
                    route, method, str(status)
                )
            timer = self._timers.get((route, method))
            if timer is None:
                timer = self._timers[(route, method)] = HTTP_DURATION.labels(route, method)
            counter.inc()
            timer.observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path_format", None) or route.path)
        template = scope.get(ROUTE_TEMPLATE_KEY)
        if template is not None:
            return str(template)
        # Answered before routing (admission's 503), by a plain route (the docs) or matched by
        # nothing (404): find the route the request was for, if any. Off the hot path.
        if self._templates is None:
            self._templates = _templates(scope.get("app"))
        path: str = scope["path"]
        for pattern, path_template in self._templates:
            if pattern.fullmatch(path):
                return path_template
        return UNMATCHED_ROUTE


def _templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """The app's path templates (its OpenAPI paths, and the docs' own) as patterns."""
    paths: list[str] = []
    with contextlib.suppress(Exception):
        paths.extend(app.openapi()["paths"])
    for attribute in ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url"):
        url = getattr(app, attribute, None)
        if url:
            paths.append(url)
    return [(_pattern(template), template) for template in paths]


def _pattern(template: str) -> re.Pattern[str]:
    """`/task/{task_id}` -> `/task/[^/]+`."""
    parts = re.split(r"\{[^}/]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))
