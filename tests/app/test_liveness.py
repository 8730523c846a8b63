"""Worker liveness (app/worker/liveness.py): a consumer's held messages are recorded with kombu's
own unacked entries, and the real worker restores those of a dead consumer, never a task a live
worker still runs. A dead consumer is played by its records in Redis: held messages, no `alive`
key."""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from celery.worker import state as worker_state
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer

from app.config import get_settings
from app.intake.broker import task_envelope
from app.worker import liveness
from app.worker.celery import JOBS_QUEUE, celery_app
from app.worker.tasks import process_data
from tests.app.helpers import create_queued_job, job_row, wait_for_task

pytestmark = pytest.mark.anyio


@pytest.fixture
def broker() -> Iterator[Any]:
    client = redis.Redis.from_url(get_settings().celery_broker_url)
    yield client
    client.close()


def _private_queue(channel: Any) -> tuple[Any, Callable[..., None]]:
    """A queue of this test's own on `channel`, declared, and a function that publishes to it."""
    name = f"liveness-{uuid.uuid4().hex}"
    exchange: Any = Exchange(name)  # type: ignore[no-untyped-call]
    queue: Any = Queue(name, exchange, routing_key=name)(channel)  # type: ignore[no-untyped-call]
    queue.declare()
    producer: Any = Producer(channel)  # type: ignore[no-untyped-call]

    def publish(body: Any, **options: Any) -> None:
        producer.publish(body, exchange=exchange, routing_key=name, **options)

    return queue, publish


def test_a_consumed_message_is_held_by_its_channel_until_acknowledged(
    broker: Any,
) -> None:
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        queue, publish = _private_queue(channel)
        publish({"n": 1})
        message = queue.get(no_ack=False)
        assert message is not None
        qos = channel.qos
        assert isinstance(qos, liveness.TrackedQoS)
        held = liveness.held_key(qos.channel_id)
        tag = message.delivery_tag
        assert broker.sismember(held, tag)
        assert broker.hexists(qos.unacked_key, tag)
        assert broker.sismember(liveness.CHANNELS, qos.channel_id)
        assert broker.ttl(liveness.alive_key(qos.channel_id)) > 0
        message.ack()
        assert not broker.sismember(held, tag)
        assert not broker.hexists(qos.unacked_key, tag)
        queue.delete()


class RunningRequest:
    """What Celery's `active_requests` (a weak set) holds of a running task: here, its id."""

    def __init__(self, task_id: str) -> None:
        self.id = task_id


def test_a_closing_channel_restores_its_messages_but_not_a_task_this_worker_runs(
    broker: Any,
) -> None:
    """kombu restores every message a channel holds when it closes, also on a lost connection; a
    task the worker still runs stays held, or it runs twice (tests/faults: a long job across a
    Redis restart)."""
    running_id, waiting_id = str(uuid.uuid4()), str(uuid.uuid4())
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        queue, publish = _private_queue(channel)
        for task_id in (running_id, waiting_id):
            publish({}, headers={"id": task_id})
        messages = {m.headers["id"]: m for m in (queue.get(no_ack=False) for _ in range(2)) if m}
        assert set(messages) == {running_id, waiting_id}
        qos = channel.qos
        # What the pool runs, as Celery records it: a request with the task's id.
        request = RunningRequest(running_id)
        worker_state.active_requests.add(request)
        try:
            qos.restore_unacked()
        finally:
            worker_state.active_requests.discard(request)
        running_tag = messages[running_id].delivery_tag
        assert broker.hexists(qos.unacked_key, running_tag)
        assert broker.sismember(liveness.held_key(qos.channel_id), running_tag)
        assert not broker.hexists(qos.unacked_key, messages[waiting_id].delivery_tag)
        restored = queue.get(no_ack=True)
        assert restored is not None
        assert restored.headers["id"] == waiting_id
        assert queue.get(no_ack=True) is None
        qos._remove_from_indices(running_tag).execute()
        queue.delete()


def _held_by_dead_channel(broker: Any, job_id: uuid.UUID) -> tuple[str, str]:
    """A process_data message as a dead consumer leaves it: in kombu's unacked hash and index,
    in the consumer's held set, and no `alive` key. Returns (channel id, delivery tag)."""
    channel_id, tag = f"dead-{uuid.uuid4().hex}", str(uuid.uuid4())
    envelope = json.loads(task_envelope(process_data.name, str(job_id), [str(job_id)], JOBS_QUEUE))
    with celery_app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        unacked, index = qos.unacked_key, qos.unacked_index_key
    broker.hset(unacked, tag, json.dumps([envelope, "", JOBS_QUEUE]))
    broker.zadd(index, {tag: time.time()})
    broker.sadd(liveness.held_key(channel_id), tag)
    broker.sadd(liveness.CHANNELS, channel_id)
    return channel_id, tag


@pytest.mark.usefixtures("worker")
async def test_the_worker_restores_a_dead_consumers_message_but_not_a_running_task(
    client: httpx.AsyncClient, broker: Any
) -> None:
    running = await create_queued_job(31)
    # A live worker reports it running (its consumer died with a Redis restart, the task runs on).
    other_worker = f"other-{uuid.uuid4().hex}"
    broker.sadd(liveness.WORKERS, other_worker)
    broker.set(liveness.active_key(other_worker), json.dumps([str(running)]), ex=600)
    running_channel, running_tag = _held_by_dead_channel(broker, running)
    stranded = await create_queued_job(32)
    _held_by_dead_channel(broker, stranded)

    done = await wait_for_task(client, str(stranded), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    # Every rescue pass since the first left the running task alone.
    with celery_app.connection_for_write() as connection:
        unacked = connection.default_channel.qos.unacked_key
    assert broker.hexists(unacked, running_tag)
    assert broker.sismember(liveness.held_key(running_channel), running_tag)
    row = job_row(running)
    assert row is not None
    assert row["status"] == "queued"

    # Its worker gone (no more reports), it is restored and runs.
    broker.delete(liveness.active_key(other_worker))
    done = await wait_for_task(client, str(running), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    assert not broker.hexists(unacked, running_tag)
    assert not broker.sismember(liveness.CHANNELS, running_channel)


def test_the_worker_shows_itself_alive_with_its_running_tasks(worker: object, broker: Any) -> None:
    del worker
    workers = {w.decode() for w in broker.smembers(liveness.WORKERS)}
    assert any(w.startswith("test@") for w in workers), workers
    (name,) = [w for w in workers if w.startswith("test@")]
    assert broker.ttl(liveness.active_key(name)) > 0
    alive = [
        c.decode()
        for c in broker.smembers(liveness.CHANNELS)
        if broker.exists(liveness.alive_key(c.decode()))
    ]
    assert alive, "the worker's consuming channel is not shown alive"
