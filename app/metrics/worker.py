"""The worker's metrics, and their `/metrics` on METRICS_PORT, served by the Celery main process
(`serve`, from the `worker_ready` signal in app/worker/celery.py: after the pool has forked, so
the server's thread runs in the main process only)."""

import logging
import socket
from typing import Any

from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client import Counter, Histogram, start_http_server

from app.config import get_settings
from app.metrics import mark_this_process_dead, multiprocess_dir, process_collector

logger = logging.getLogger(__name__)

# A job runs for JOB_WORK_SECONDS (0.5 s by default), longer with a slow database.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

JOBS_FINISHED = Counter(
    "taskstack_jobs_finished_total",
    "Jobs whose final state was committed (a redelivery that changes nothing is not counted)",
    ["task", "status"],
)
JOB_RUN = Histogram(
    "taskstack_job_run_seconds",
    "A job's run time, start to final state",
    ["task"],
    buckets=RUN_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "taskstack_job_queue_wait_seconds",
    "From the job's row commit to its first start",
    ["task"],
    buckets=WAIT_BUCKETS,
)
JOB_RETRIES = Counter("taskstack_job_retries_total", "Retries scheduled", ["task"])
JOBS_REQUEUED = Counter(
    "taskstack_jobs_requeued_total",
    "Jobs (messages) sent back to the queue by worker liveness or the reaper",
    ["by"],
)


def task_label(task_name: str) -> str:
    """`app.tasks.process_data` -> `process_data`."""
    return task_name.rsplit(".", 1)[-1]


def job_finished(task_name: str, status: str, run_seconds: float | None) -> None:
    """A job's final state was committed (the UPDATE changed its row)."""
    task = task_label(task_name)
    JOBS_FINISHED.labels(task, status).inc()
    if run_seconds is not None:
        JOB_RUN.labels(task).observe(run_seconds)


# The running server of this process (the Celery main process), if any.
_server: Any = None


def serve(port: int) -> None:
    """Serve this container's worker metrics on `port` (0: off). A port already taken is logged,
    not fatal: the worker's jobs matter more than its metrics."""
    global _server
    if port == 0 or _server is not None:
        return
    if multiprocess_dir() is None:
        logger.warning(
            "PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows the main process only, "
            "not what the pool's processes counted"
        )
    try:
        _server, _ = start_http_server(port, registry=process_collector())
    except OSError as error:
        logger.error("worker metrics not served on port %d: %s", port, error)
        return
    logger.info("worker metrics served on port %d", port)


def close_inherited_server() -> None:
    """In a pool process forked after `serve`: close its copy of the listening socket, so only
    the main process holds the port."""
    if _server is not None:
        sock: socket.socket = _server.socket
        sock.close()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _serve_when_ready(**_: Any) -> None:
    # Sent in the main process once the pool has forked (beat and Flower never send it).
    serve(get_settings().metrics_port)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _child_started(**_: Any) -> None:
    close_inherited_server()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _process_ends(**_: Any) -> None:
    mark_this_process_dead()
