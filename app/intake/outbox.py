"""The transactional outbox: the broker is not on the accept path.

A request's rows (a group commit's jobs, a notification) are committed in ONE statement together
with an `outbox` row naming their task messages; the client is answered then, whatever Redis is
doing. Afterwards this process pushes the messages (`Outbox.publish_soon`: one `LPUSH` for every
batch committed meanwhile). So the accept path costs no more round trips than before, and a
message never names a row that is not committed.

Published rows are deleted by the next relay pass, many in one statement. A Redis that stopped or
died may come back without some messages it had taken (the last second of writes of a killed
Redis; one a worker popped as it went away): the relay notices the restart (a new `run_id`) and
publishes again, once per Redis run, every unfinished job Redis no longer holds (`reconcile`).

What the broker did not take stays in `outbox`. The relay (`run_relay`, a task in every API
process, started by the app's lifespan) publishes it: at once for this process's own failed
batches, after `OUTBOX_RELAY_AFTER_SECONDS` for the rows of a process that died between its commit
and its push. It runs every `OUTBOX_RELAY_INTERVAL_SECONDS`, so pending messages reach the broker
within about that long of its return. Several API processes share the work with
`FOR UPDATE SKIP LOCKED`. A message published twice (after a broker or API crash, or a slow
publisher) is harmless: the worker ignores a delivery for a finished job, and every state change
is conditional (docs/app.md, "Job lifecycle").
"""

import asyncio
import contextlib
import json
import logging
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from kombu.transport import redis as kombu_redis

from app.config import get_settings
from app.intake.broker import get_publisher, queue_of, task_envelope
from app.storage import pg
from app.storage.models import UNFINISHED_STATUSES
from app.worker.liveness import CONSUMER_DEATHS
from app.worker.tasks import process_data

logger = logging.getLogger(__name__)

# The outbox rows the broker took, deleted in one statement. Committed without waiting for the
# WAL flush (set for this statement's own transaction): losing it in a crash only means the relay
# publishes those messages once more.
DELETE_PUBLISHED = """
WITH published AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]))
SELECT set_config('synchronous_commit', 'off', true)
"""

# What the relay may publish: this process's failed batches ($2) and anything older than $1 s.
RELAY_DUE = "created_at < now() - make_interval(secs => $1) OR id = ANY($2::bigint[])"
RELAY_ANY_DUE = f"SELECT EXISTS (SELECT FROM outbox WHERE {RELAY_DUE})"  # noqa: S608 - constants
RELAY_TAKE = f"""
SELECT id, task_name, task_ids, args, traceparents FROM outbox WHERE {RELAY_DUE}
ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
"""  # noqa: S608
RELAY_BATCH_ROWS = 100
DELETE_RELAYED = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"


@dataclass(frozen=True)
class OutboxBatch:
    """One outbox row: task messages committed together."""

    outbox_id: int
    task_name: str
    task_ids: Sequence[uuid.UUID]
    # One list of arguments per task; None: each task's one argument is its own id (jobs).
    args: Sequence[Sequence[Any]] | None = None
    # One W3C traceparent per task (app/tracing.py), the request's that committed it; None: none.
    traceparents: Sequence[str | None] | None = None

    def envelopes(self) -> tuple[str, list[bytes]]:
        queue = queue_of(self.task_name)
        return queue, [
            task_envelope(
                self.task_name,
                str(task_id),
                [str(task_id)] if self.args is None else list(self.args[index]),
                queue,
                None if self.traceparents is None else self.traceparents[index],
            )
            for index, task_id in enumerate(self.task_ids)
        ]


async def push(batches: Sequence[OutboxBatch]) -> None:
    """The batches' messages onto the broker, in order: one LPUSH per queue (LPUSH pushes its
    arguments one after the other onto the head and BRPOP takes from the tail: first in, first
    out). Raises when the broker does not take them."""
    by_queue: dict[str, list[bytes]] = {}
    for batch in batches:
        queue, envelopes = batch.envelopes()
        by_queue.setdefault(queue, []).extend(envelopes)
    publisher = get_publisher()
    if len(by_queue) == 1:
        ((queue, envelopes),) = by_queue.items()
        await publisher.lpush(queue, *envelopes)
        return
    async with publisher.pipeline(transaction=False) as pipe:
        for queue, envelopes in by_queue.items():
            pipe.lpush(queue, *envelopes)
        await pipe.execute()


@dataclass
class Outbox:
    """The publisher of one event loop (see the module docstring)."""

    pending: list[OutboxBatch] = field(default_factory=list)
    # This process's batches the broker refused: the relay takes them without waiting.
    failed: set[int] = field(default_factory=set)
    # Published rows, deleted by the next relay pass (one DELETE for all of them).
    published: list[int] = field(default_factory=list)
    publishing: asyncio.Task[None] | None = None
    # The broker's `run_id` at the last relay pass: a new one means Redis restarted.
    broker_run_id: str | None = None

    def publish_soon(self, batch: OutboxBatch) -> None:
        """Queue a committed batch for the broker; never raises, never waits."""
        self.pending.append(batch)
        if self.publishing is None or self.publishing.done():
            self.publishing = asyncio.create_task(self._publish_pending())

    async def _publish_pending(self) -> None:
        while self.pending:
            batches, self.pending = self.pending, []
            outbox_ids = [batch.outbox_id for batch in batches]
            try:
                await push(batches)
            except Exception as error:  # the relay publishes them when the broker is back
                self.failed.update(outbox_ids)
                logger.warning(
                    "broker did not take %d outbox batches (%s); the relay will",
                    len(batches),
                    type(error).__name__,
                )
                continue
            self.published.extend(outbox_ids)

    async def finish_publishing(self, seconds: float) -> None:
        """Wait (at most `seconds`) for the batches queued so far (the API's shutdown)."""
        if self.publishing is not None and not self.publishing.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.publishing), seconds)

    async def relay_once(self) -> int:
        """Publish what is due (see the module docstring); how many messages went out."""
        after_seconds = get_settings().outbox_relay_after_seconds
        run_id = str((await get_publisher().info("server"))["run_id"])
        published = 0
        async with pg.connection() as connection:
            if await connection.fetchval(RELAY_ANY_DUE, after_seconds, list(self.failed)):
                while True:
                    taken = await self._relay_rows(connection, after_seconds)
                    published += taken
                    if taken < RELAY_BATCH_ROWS:
                        break
            else:
                self.failed.clear()
            await self._delete_published(connection)
            if self.broker_run_id not in (None, run_id):
                published += await reconcile(connection, run_id)
            deaths = await get_publisher().get(CONSUMER_DEATHS)
            if deaths is not None:
                published += await reconcile(connection, f"{run_id}:death-{int(deaths)}")
        self.broker_run_id = run_id
        if published:
            logger.warning("relay published %d pending task messages", published)
        return published

    async def _delete_published(self, connection: asyncpg.Connection) -> None:
        if self.published:
            published, self.published = self.published, []
            await connection.execute(DELETE_PUBLISHED, published)

    async def _relay_rows(self, connection: asyncpg.Connection, after_seconds: float) -> int:
        async with connection.transaction():
            rows = await connection.fetch(
                RELAY_TAKE, after_seconds, list(self.failed), RELAY_BATCH_ROWS
            )
            batches = [
                OutboxBatch(
                    row["id"],
                    row["task_name"],
                    row["task_ids"],
                    None if row["args"] is None else json.loads(row["args"]),
                    row["traceparents"],
                )
                for row in rows
            ]
            if batches:
                await push(batches)  # raises: the transaction rolls back, the rows stay
                await connection.execute(DELETE_RELAYED, [batch.outbox_id for batch in batches])
        self.failed.difference_update(batch.outbox_id for batch in batches)
        return sum(len(batch.task_ids) for batch in batches)


# Unfinished jobs, for the reconciliation after a broker restart.
UNFINISHED_JOBS = f"""
SELECT id FROM jobs WHERE status IN ({", ".join(repr(s.value) for s in UNFINISHED_STATUSES)})
"""  # noqa: S608 - the model's own constants
RECONCILE_SCAN = 1000


# A reconciliation being done: its lock expires, so one whose process died is taken up again.
RECONCILE_LOCK_SECONDS = 30
RECONCILED_KEEP_SECONDS = 86400


async def reconcile(connection: asyncpg.Connection, run_id: str) -> int:
    """After a broker restart, or a consumer's death (`run_id` then names the death: the
    liveness counter, app/worker/liveness.py): publish again every unfinished job the broker no
    longer
    holds.

    A Redis that stopped or died may have lost messages the outbox no longer has: one a worker
    had just popped (BRPOP) but not yet recorded as unacknowledged, the last second of writes of
    a killed Redis. A stopping worker holds the reply of its last BRPOP outside every key until
    its pool has drained. Such a job would otherwise wait for the reaper
    (REAPER_STALE_AFTER_SECONDS). Done once per Redis run or death, by one API process at a time;
    it counts as done only once its messages are out, so a pass that fails or is cancelled (its
    process stopping, in the same deploy that stopped the worker) is done again by the next pass
    of any process. A job in transit at that moment may be published twice: harmless (module
    docstring)."""
    publisher = get_publisher()
    done_key, lock_key = f"taskstack:reconciled:{run_id}", f"taskstack:reconciling:{run_id}"
    if await publisher.exists(done_key):
        return 0
    if not await publisher.set(lock_key, 1, nx=True, ex=RECONCILE_LOCK_SECONDS):
        return 0
    missing: list[uuid.UUID] = []
    try:
        if await publisher.exists(done_key):  # done by the lock's previous holder meanwhile
            return 0
        missing = await _unfinished_jobs_not_held(connection)
        if missing:
            await push([OutboxBatch(0, process_data.name, missing)])
            logger.warning(
                "reconciled (%s): published %d unfinished jobs the broker no longer held",
                run_id,
                len(missing),
            )
        await publisher.set(done_key, 1, ex=RECONCILED_KEEP_SECONDS)
    finally:
        # Also when cancelled: the next pass, here or in another process, does it again.
        await asyncio.shield(publisher.delete(lock_key))
    return len(missing)


async def _unfinished_jobs_not_held(connection: asyncpg.Connection) -> list[uuid.UUID]:
    """Unfinished jobs whose message is neither on the jobs queue nor unacknowledged."""
    publisher = get_publisher()
    queue = queue_of(process_data.name)
    held: set[str] = set()
    length = int(await publisher.llen(queue))
    for start in range(0, length, RECONCILE_SCAN):
        for raw in await publisher.lrange(queue, start, start + RECONCILE_SCAN - 1):
            held.add(str(json.loads(raw)["headers"]["id"]))
        await asyncio.sleep(0)
    async for _, raw in publisher.hscan_iter(kombu_redis.Channel.unacked_key, count=RECONCILE_SCAN):
        held.add(str(json.loads(raw)[0]["headers"]["id"]))
    return [
        row["id"] for row in await connection.fetch(UNFINISHED_JOBS) if str(row["id"]) not in held
    ]


async def run_relay(stopping: asyncio.Event) -> None:
    """The relay loop of this API process (started by the app's lifespan). It ends between two
    passes once `stopping` is set: a pass cut off half-way would leave its work to the next
    process that notices (a reconciliation waits for its lock to expire)."""
    outbox = get_outbox()
    interval = get_settings().outbox_relay_interval_seconds
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
            return
        try:
            await outbox.relay_once()
        except Exception as error:  # PostgreSQL or the broker away: the next pass tries again
            logger.info("outbox relay pass failed: %s: %s", type(error).__name__, error)


_outboxes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox]" = (
    weakref.WeakKeyDictionary()
)


def get_outbox() -> Outbox:
    """The running loop's outbox publisher (one per API process; tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    outbox = _outboxes.get(loop)
    if outbox is None:
        outbox = _outboxes[loop] = Outbox()
    return outbox
