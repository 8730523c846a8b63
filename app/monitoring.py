"""The Celery app as Flower runs it (`celery -A app.monitoring flower`): Flower's /metrics behind
the same authentication as every other page, and a bound on the events Flower has yet to apply.

Flower 2.2 serves `/metrics` (task names, worker host names and counts) without checking
credentials, while `--basic-auth` guards the rest; its handler is given the same
`tornado.web.authenticated` guard the other pages use. Without `FLOWER_BASIC_AUTH` (dev) Flower's
`get_current_user` lets everyone in, /metrics included, as before.

Flower's event thread hands every event to the IOLoop (`Events.on_event`: `add_callback`) with no
bound: when the workers emit task events faster than the IOLoop applies them (3 a job, a few
thousand a second under load, Flower at half a CPU), the callbacks pile up until the memory
cgroup kills Flower (RELIABILITY.md, "Overload"). Beyond `EVENT_BACKLOG_LIMIT` waiting events, a
new one is dropped and counted: the dashboard's view lags and misses tasks, never the jobs (their
record is PostgreSQL's). Its task list is bounded by Flower's own `--max_tasks` (infra/spec.py).
"""

import logging
import threading
import time
from functools import partial
from typing import Any

import tornado.web
from flower import events
from flower.views import monitor

from app.worker.celery import celery_app

__all__ = ["celery_app"]

logger = logging.getLogger(__name__)

EVENT_BACKLOG_LIMIT = 5_000  # ~1 KB an event: a few MB waiting at most
DROPPED_REPORT_SECONDS = 10.0

monitor.Metrics.get = tornado.web.authenticated(monitor.Metrics.get)


class EventBacklog:
    """Counts events handed to the IOLoop and not yet applied; refuses past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self.dropped = 0
        self._reported_dropped = 0
        self._reported_at = time.monotonic()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self.waiting >= self.limit:
                self.dropped += 1
                self._report()
                return False
            self.waiting += 1
            return True

    def applied(self) -> None:
        with self._lock:
            self.waiting -= 1

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._reported_at >= DROPPED_REPORT_SECONDS:
            logger.warning(
                "%d task events dropped in %.0f s: Flower applies them slower than the workers "
                "send them (%d waiting); its view lags",
                self.dropped - self._reported_dropped,
                now - self._reported_at,
                self.waiting,
            )
            self._reported_dropped, self._reported_at = self.dropped, now


backlog = EventBacklog(EVENT_BACKLOG_LIMIT)


def _apply(state: Any, event: dict[str, Any]) -> None:
    try:
        state.event(event)
    finally:
        backlog.applied()


def _on_event(self: events.Events, event: dict[str, Any]) -> None:
    # Flower's own on_event (flower/events.py), behind the backlog's bound.
    if backlog.admit():
        self.io_loop.add_callback(partial(_apply, self.state, event))


events.Events.on_event = _on_event
