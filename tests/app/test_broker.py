"""`app.intake.broker` writes, byte for byte where it matters, what kombu's Redis transport writes.

Both publishers push one message for the same task id to a queue no worker consumes; the test
compares the two envelopes as the worker reads them (only the per-message delivery tag differs).
"""

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app.config import get_settings
from app.intake.broker import task_envelope
from app.worker.tasks import process_data

CHECK_QUEUE = "envelope-check"


def _pop_envelope(client: redis.Redis) -> dict[str, Any]:
    raw = client.rpop(CHECK_QUEUE)
    assert isinstance(raw, bytes), "nothing was published"
    envelope: dict[str, Any] = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    envelope["properties"].pop("delivery_tag")
    return envelope


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(get_settings().celery_broker_url)
    client.delete(CHECK_QUEUE)
    yield client
    client.delete(CHECK_QUEUE)
    client.close()


def test_envelope_matches_kombus_own(broker: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    process_data.apply_async(args=[task_id], task_id=task_id, ignore_result=True, queue=CHECK_QUEUE)
    from_kombu = _pop_envelope(broker)

    broker.lpush(CHECK_QUEUE, task_envelope(process_data.name, task_id, [task_id], CHECK_QUEUE))
    from_app = _pop_envelope(broker)

    assert from_app == from_kombu
