"""Publishing Celery task messages from the event loop, on one long-lived asyncio Redis pool.

Celery's own `apply_async` is blocking (kombu's Redis client), so the API had to hop to a thread
for every publish; the hop and the thread contention cost more than the publish itself. Here
Celery builds the message (`amqp.create_task_message`, the same headers, properties and body as
`apply_async`) and routes it (`amqp.router`, so `task_routes` apply); only the last step, kombu's
Redis transport envelope and its `LPUSH`, is done here with `redis.asyncio`:

- kombu `transport/virtual/base.py` `Channel.prepare_message` and `basic_publish`: the JSON
  envelope `{body, content-encoding, content-type, headers, properties}` with the body base64
  encoded (`body_encoding`), `delivery_info` {exchange, routing_key}, a fresh `delivery_tag`;
- kombu `transport/redis.py` `Channel._put`: `LPUSH` on the queue's key (priority 0 uses the bare
  queue name; the worker's `BRPOP` reads it). The queue is reached through the default exchange
  (exchange `""`, routing key = queue name), as Celery publishes by default.

The worker reads these messages exactly as it reads `apply_async`'s (the app tests' POST-then-poll
flow goes through a real worker). Not supported here (and not used by this app): priorities,
`global_keyprefix` transport option, fanout/topic exchanges, ETA/countdown.
"""

import asyncio
import base64
import json
import uuid
import weakref
from functools import lru_cache
from typing import Any

from kombu.serialization import dumps
from redis.asyncio import Redis

from app.config import get_settings
from app.worker.celery import celery_app

# kombu's default for messages of a durable queue (`delivery_mode` 2, persistent).
PERSISTENT = 2


# One client per event loop (a process serves on one; tests run one loop per test): asyncio
# connections belong to the loop that opened them.
_publishers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis]" = (
    weakref.WeakKeyDictionary()
)


def get_publisher() -> Redis:
    """The running loop's long-lived Redis client for task messages (its own connection pool)."""
    loop = asyncio.get_running_loop()
    client = _publishers.get(loop)
    if client is None:
        settings = get_settings()
        client = _publishers[loop] = Redis.from_url(
            settings.celery_broker_url,
            # A broker that does not answer fails the request (503, the job stays queued for
            # the reaper) instead of holding it.
            socket_connect_timeout=settings.readiness_timeout_seconds,
            socket_timeout=settings.readiness_timeout_seconds,
        )
    return client


async def close_publisher() -> None:
    """Close the running loop's publisher, if it was opened (the API's shutdown)."""
    client = _publishers.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def _queue_of(task_name: str) -> str:
    route = celery_app.amqp.router.route({}, task_name, (), {}, celery_app.tasks.get(task_name))
    queue = route["queue"]
    exchange = queue.exchange.name if queue.exchange is not None else ""
    if exchange not in ("", queue.name) or queue.routing_key not in (None, "", queue.name):
        raise ValueError(f"{task_name} routes through exchange {exchange!r}; use apply_async")
    return str(queue.name)


@lru_cache
def queue_of(task_name: str) -> str:
    """The Redis list a task's messages go to (resolved once through Celery's router)."""
    return _queue_of(task_name)


def task_envelope(
    task_name: str, task_id: str, args: list[Any], queue: str, traceparent: str | None = None
) -> bytes:
    """The bytes kombu's Redis transport would push for `apply_async(args, task_id=...)`, with
    `headers={"traceparent": ...}` when given (the worker's span continues that trace)."""
    message = celery_app.amqp.create_task_message(
        task_id,
        task_name,
        args,
        {},
        reply_to=celery_app.thread_oid,
        root_id=task_id,
        ignore_result=True,
    )
    if traceparent is not None:
        message.headers["traceparent"] = traceparent
    content_type, content_encoding, body = dumps(message.body, serializer="json")  # type: ignore[no-untyped-call]
    body_bytes = body.encode(content_encoding) if isinstance(body, str) else body
    properties = dict(message.properties)
    properties.update(
        delivery_mode=PERSISTENT,
        delivery_info={"exchange": "", "routing_key": queue},
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
    )
    envelope = {
        "body": base64.b64encode(body_bytes).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": message.headers,
        "properties": properties,
    }
    return json.dumps(envelope).encode()


async def publish_task(
    task_name: str, task_id: str, args: list[Any], traceparent: str | None = None
) -> None:
    """Queue a task message without leaving the event loop; raises when Redis refuses it."""
    queue = queue_of(task_name)
    await get_publisher().lpush(queue, task_envelope(task_name, task_id, args, queue, traceparent))
