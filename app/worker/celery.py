"""The Celery application: worker, beat and Flower start from here (`celery -A app.worker ...`)."""

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init
from kombu.entity import Queue

from app.config import get_settings
from app.logs import install_celery_logging
from app.metrics import worker as _metrics  # noqa: F401 - serves /metrics (METRICS_PORT) on its signals
from app.storage.db import dispose_sync_engines
from app.tracing import install_celery_hooks
from app.worker.fork_safety import guard_name_lookups
from app.worker.liveness import Rescuer, RunningTasksReporter, running_task_ids

logger = logging.getLogger(__name__)
settings = get_settings()

# Jobs travel on `celery`; the periodic tasks on `maintenance`, so a backlog of jobs cannot starve
# the reaper (its messages expire after one interval). A worker consumes both queues, alternating.
JOBS_QUEUE = "celery"
MAINTENANCE_QUEUE = "maintenance"

celery_app = Celery("taskstack", include=["app.worker.tasks"])
celery_app.conf.update(
    broker_url=settings.celery_broker_url,
    result_backend=settings.celery_result_backend,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    task_track_started=True,
    result_expires=settings.result_expires_seconds,
    # A task is acknowledged when it ends, so a worker that dies mid-task leaves its message to be
    # redelivered; prefetching one message per process keeps long tasks from queueing behind others.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Redis redelivers an unacknowledged message after this long: it must exceed the longest task
    # (work time plus the longest retry countdown, which a worker holds unacknowledged).
    broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
    broker_connection_retry_on_startup=True,
    # kombu's Redis transport, recording which messages each consumer holds
    # (app/worker/liveness.py).
    broker_transport="app.worker.liveness:Transport",
    task_queues=(Queue(JOBS_QUEUE), Queue(MAINTENANCE_QUEUE)),  # type: ignore[no-untyped-call]
    task_default_queue=JOBS_QUEUE,
    task_routes={
        "app.tasks.requeue_stale_jobs": {"queue": MAINTENANCE_QUEUE},
        "app.tasks.purge_finished_jobs": {"queue": MAINTENANCE_QUEUE},
    },
    beat_schedule_filename=str(settings.beat_schedule_path),
    beat_schedule={
        "requeue-stale-jobs": {
            "task": "app.tasks.requeue_stale_jobs",
            "schedule": timedelta(seconds=settings.reaper_interval_seconds),
            # A reaper run nobody picked up before the next one is pointless.
            "options": {"expires": settings.reaper_interval_seconds},
        },
        "purge-finished-jobs": {
            "task": "app.tasks.purge_finished_jobs",
            "schedule": timedelta(seconds=settings.purge_interval_seconds),
            "options": {"expires": settings.purge_interval_seconds},
        },
    },
)


@worker_init.connect  # type: ignore[untyped-decorator]
def _guard_name_lookups(**_: Any) -> None:
    # In the main process, before the pool forks its children (app/worker/fork_safety.py).
    guard_name_lookups()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _dispose_inherited_pool(**_: Any) -> None:
    # A forked child must open its own connections, never reuse the parent's sockets.
    dispose_sync_engines()


class WorkerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Every WORKER_HEARTBEAT_SECONDS while the consumer is connected: touches
    WORKER_HEARTBEAT_PATH (the container healthcheck), shows the worker alive in Redis and puts
    dead workers' messages back on their queues (app/worker/liveness.py)."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path: Path = get_settings().worker_heartbeat_path
        self.timer_ref: Any = None
        self.rescuer = Rescuer(str(parent.hostname))

    def _beat(self, parent: Any) -> None:
        self.path.touch()
        consumer = getattr(parent, "task_consumer", None)
        channel = getattr(consumer, "channel", None)
        if channel is None:
            return
        qos = channel.qos
        own = getattr(qos, "channel_id", None)
        try:
            with channel.conn_or_acquire() as client:
                self.rescuer.beat(client, own)
                self.rescuer.rescue(client, qos, own)
        except Exception as error:  # Redis away: the consumer reconnects, the next beat retries
            logger.warning("liveness heartbeat failed: %s: %s", type(error).__name__, error)

    def start(self, parent: Any) -> None:
        self._beat(parent)
        self.timer_ref = parent.timer.call_repeatedly(
            get_settings().worker_heartbeat_seconds, self._beat, (parent,)
        )

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
        # A stale or missing file is what the healthcheck reports as unhealthy.
        self.path.unlink(missing_ok=True)

    shutdown = stop


class ReportRunningTasks(bootsteps.StartStopStep):  # type: ignore[misc]
    """The worker's `RunningTasksReporter` (app/worker/liveness.py), for the process's whole
    life."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.reporter: RunningTasksReporter | None = None

    def start(self, worker: Any) -> None:
        self.reporter = RunningTasksReporter(str(worker.hostname), running_task_ids)
        self.reporter.start()

    # Not stopped with the worker's steps: a worker shutting down (also after Celery's
    # "Unrecoverable error" on a lost broker connection) still runs its pool's tasks until they
    # end, and they must stay reported until the process exits (the thread is a daemon).


celery_app.steps["consumer"].add(WorkerHeartbeat)
celery_app.steps["worker"].add(ReportRunningTasks)

# Logs (app/logs.py: JSON lines or text, never Celery's own formatting) and traces (app/tracing.py).
install_celery_logging()
install_celery_hooks()
