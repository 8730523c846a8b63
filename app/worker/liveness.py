"""Worker liveness: a dead worker's messages back on the queue in seconds, a live one's never.

Celery with Redis keeps each message a worker took, and has not acknowledged yet, in kombu's
`unacked` hash until the task ends; a worker that dies leaves it there until the visibility
timeout (an hour by default) hands it out again. Shortening that timeout would run long tasks
twice. Instead, each consumer channel records which messages it holds and shows that it is alive:

- `TrackedQoS` (the broker transport's QoS, `broker_transport` in app/worker/celery.py) adds the
  delivery tag to the channel's `held` set in the same pipeline that writes kombu's `unacked`
  entry, and removes it in the pipeline that removes the entry: no extra round trip per message.
  That pipeline also refreshes the channel's `alive` key.
- Every `WORKER_HEARTBEAT_SECONDS` each worker (`WorkerHeartbeat` in app/worker/celery.py)
refreshes its
  consuming channel's `alive` key (expiring after `WORKER_DEAD_AFTER_SECONDS`), and a thread of
  its own (`RunningTasksReporter`) records the ids of the tasks its pool is running (`active`,
  same expiry), also while the consumer is reconnecting.
- Then it rescues: a channel whose `alive` key has expired is dead — its worker was killed
  (container, parent process, OOM) or its connection died with a Redis restart. Keys expire while
  Redis is down too, so nothing is restored until Redis has been up for two heartbeats (every
  live worker has beaten and reported what it runs since).
  Its held messages go back to the front of their queue with kombu's own `restore_by_tag`, except
  a task some live worker is still running (a connection lost under a long task): that one stays
  held until it ends. One rescuer per dead channel at a time (a lock key).
- A channel that closes, also on a lost connection, puts back what it holds with kombu's own
  restore, except the tasks its worker still runs (`TrackedQoS.restore_unacked`).

A pool child killed alone is Celery's own business: its parent rejects the message back to the
queue (`task_reject_on_worker_lost`). The reaper (app/worker/tasks.py) stays the last resort.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from celery.worker import state as worker_state
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from app.config import get_settings
from app.metrics.worker import JOBS_REQUEUED

logger = logging.getLogger(__name__)

PREFIX = "taskstack:liveness:"
CHANNELS = PREFIX + "channels"  # every channel that may hold messages
WORKERS = PREFIX + "workers"  # every worker that published its running tasks
CONSUMER_DEATHS = PREFIX + "deaths"  # a counter: dead channels handled so far


def running_task_ids() -> list[str]:
    """The ids of the tasks this worker process's pool is running."""
    # Read from the reporter's thread while the main thread changes the set: copy, retry.
    for _ in range(5):
        try:
            return [request.id for request in list(worker_state.active_requests)]
        except RuntimeError:  # "Set changed size during iteration"
            continue
    return []


def held_key(channel_id: str) -> str:
    return f"{PREFIX}held:{channel_id}"


def alive_key(channel_id: str) -> str:
    return f"{PREFIX}alive:{channel_id}"


def active_key(worker: str) -> str:
    return f"{PREFIX}active:{worker}"


def lock_key(channel_id: str) -> str:
    return f"{PREFIX}rescuing:{channel_id}"


class TrackedQoS(kombu_redis.QoS):
    """kombu's Redis QoS, which also records the channel's held messages (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.channel_id = uuid.uuid4().hex
        self.dead_after = max(1, round(get_settings().worker_dead_after_seconds))

    def append(self, message: Any, delivery_tag: str) -> None:
        # kombu's own append (transport/redis.py QoS.append), with the held set and alive key
        # in the same pipeline.
        delivery = message.delivery_info
        entry = [message._raw, delivery["exchange"], delivery["routing_key"]]
        raw = kombu_dumps(entry)  # type: ignore[no-untyped-call]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}).hset(
                self.unacked_key, delivery_tag, raw
            ).sadd(held_key(self.channel_id), delivery_tag).sadd(CHANNELS, self.channel_id).set(
                alive_key(self.channel_id), 1, ex=self.dead_after
            ).execute()
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_unacked(self, client: Any = None) -> None:
        # kombu's own (transport/redis.py QoS.restore_unacked), called when the channel closes,
        # also on a lost connection. It put back a task this worker still runs, which then ran
        # twice when Redis was back before the consumer noticed. Such a message stays held by
        # this channel: once the task has ended, its ack removes it, or the rescuer restores it
        # and the delivery finds the job finished.
        running = set(running_task_ids())
        with self.channel.conn_or_acquire(client) as connection:
            for tag, message in list(self._delivered.items()):
                if message.headers.get("id") not in running:
                    self.restore_by_tag(tag, client=connection)  # type: ignore[no-untyped-call]
        self._delivered.clear()

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
        return pipe.srem(held_key(self.channel_id), delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = TrackedQoS


class Transport(kombu_redis.Transport):
    """`broker_transport`: kombu's Redis transport with `TrackedQoS`."""

    Channel = Channel


def _text(values: Iterable[bytes | str]) -> list[str]:
    return sorted(v.decode() if isinstance(v, bytes) else v for v in values)


def _task_id(raw_entry: bytes | None) -> str | None:
    if raw_entry is None:
        return None
    payload = kombu_loads(raw_entry)[0]  # type: ignore[no-untyped-call]
    task_id = payload.get("headers", {}).get("id")
    return str(task_id) if task_id is not None else None


class Rescuer:
    """One worker's heartbeat and rescue passes (run by `WorkerLiveness` in
    app/worker/celery.py)."""

    def __init__(self, worker: str) -> None:
        settings = get_settings()
        self.worker = worker
        self.dead_after = max(1, round(settings.worker_dead_after_seconds))
        # Redis up at least this long before anything is restored: two heartbeats of every worker.
        self.confirm_seconds = 2 * settings.worker_heartbeat_seconds

    def beat(self, client: Any, channel_id: str | None) -> None:
        """Show this worker's consuming channel alive."""
        if channel_id is not None:
            client.pipeline(transaction=False).sadd(CHANNELS, channel_id).set(
                alive_key(channel_id), 1, ex=self.dead_after
            ).execute()

    def dead_channels(self, client: Any, own: str | None) -> list[str]:
        """Channels whose `alive` key has expired: silent for WORKER_DEAD_AFTER_SECONDS.

        None while Redis has been up for less than two heartbeats: keys expire while Redis is
        down, so just after a restart every channel looks dead until live workers have beaten
        (and reported what they run) again."""
        if float(client.info("server")["uptime_in_seconds"]) < self.confirm_seconds:
            return []
        channels = [channel for channel in _text(client.smembers(CHANNELS)) if channel != own]
        if not channels:
            return []
        alive = client.mget([alive_key(channel) for channel in channels])
        return [channel for channel, flag in zip(channels, alive, strict=True) if flag is None]

    def running_anywhere(self, client: Any) -> set[str]:
        """Task ids that live workers reported running (their `active` keys)."""
        workers = sorted(
            w.decode() if isinstance(w, bytes) else w for w in client.smembers(WORKERS)
        )
        if not workers:
            return set()
        running: set[str] = set()
        for worker, value in zip(
            workers, client.mget([active_key(w) for w in workers]), strict=True
        ):
            if value is None:
                client.srem(WORKERS, worker)
            else:
                running.update(json.loads(value))
        return running

    def rescue(self, client: Any, qos: Any, own: str | None) -> int:
        """Restore the held messages of dead channels; how many went back to their queues.

        `qos` is this worker's channel's QoS: kombu's `restore_by_tag` on it moves an entry from
        `unacked` back to the front of its queue, atomically (WATCH/MULTI)."""
        dead = self.dead_channels(client, own)
        if not dead:
            return 0
        running = self.running_anywhere(client)
        restored = 0
        for channel in dead:
            if not client.set(lock_key(channel), self.worker, nx=True, ex=60):
                continue
            try:
                restored += self._rescue_channel(client, qos, channel, running)
            finally:
                client.delete(lock_key(channel))
        if restored:
            JOBS_REQUEUED.labels("liveness").inc(restored)
            logger.warning("restored %d messages held by dead workers", restored)
        return restored

    def _rescue_channel(self, client: Any, qos: Any, channel: str, running: set[str]) -> int:
        restored = 0
        kept = 0
        for raw_tag in client.smembers(held_key(channel)):
            tag = raw_tag.decode() if isinstance(raw_tag, bytes) else raw_tag
            task_id = _task_id(client.hget(qos.unacked_key, tag))
            if task_id is not None and task_id in running:
                kept += 1  # still running on a live worker (its connection was replaced)
                continue
            if task_id is not None:
                qos.restore_by_tag(tag, client=client)
                restored += 1
                logger.warning("task %s: its worker died; message back on the queue", task_id)
            client.srem(held_key(channel), tag)
        if not kept:
            client.srem(CHANNELS, channel)
            client.delete(held_key(channel))
            # A message the dead consumer had popped (BRPOP) but not yet recorded as held is in
            # no key at all: the API's relay reconciles once per death (app/intake/outbox.py).
            client.incr(CONSUMER_DEATHS)
        return restored


class RunningTasksReporter:
    """Reports the tasks a worker's pool is running, every WORKER_HEARTBEAT_SECONDS, from a thread
    of its own with its own Redis client: also while the worker's consumer is reconnecting (its
    connection died with a Redis restart, its tasks run on), when the consumer's own steps are
    stopped. A task reported here is never restored from a dead channel."""

    def __init__(self, worker: str, running: Callable[[], Iterable[str]]) -> None:
        settings = get_settings()
        self.worker, self.running = worker, running
        self.interval = settings.worker_heartbeat_seconds
        self.dead_after = max(1, round(settings.worker_dead_after_seconds))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="liveness-report", daemon=True)
        self.client: Any = redis.Redis.from_url(
            settings.celery_broker_url,
            socket_connect_timeout=settings.readiness_timeout_seconds,
            socket_timeout=settings.readiness_timeout_seconds,
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.client.close()

    def report(self) -> None:
        self.client.pipeline(transaction=False).sadd(WORKERS, self.worker).set(
            active_key(self.worker), json.dumps(sorted(self.running())), ex=self.dead_after
        ).execute()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.report()
            except Exception as error:  # Redis away: the next report tries again
                logger.info("running tasks not reported: %s: %s", type(error).__name__, error)
            self.stopped.wait(self.interval)
