"""Accepting jobs in groups: POST /process's group commit.

Each request hands its item id to the running loop's `JobIntake` and waits. A flush takes every
request waiting at that moment, inserts their rows with ONE multi-row INSERT (committed when it
returns: autocommit), then pushes their task messages with ONE `LPUSH`, and only then answers each
request. So every guarantee of the one-row-per-request path holds per job — the row is committed
before its message exists and before its 202 — while 32 concurrent requests cost a couple of round
trips instead of 64. Requests that arrive during a flush wait for the next one (at most
`MAX_CONCURRENT_FLUSHES` run at once), so a lone request is never delayed by a timer.
"""

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field

from app import pg
from app.broker import get_publisher, queue_of, task_envelope
from app.jobs import PROCESS_DATA
from app.tasks import process_data

MAX_BATCH = 256
MAX_CONCURRENT_FLUSHES = 2

# A queued job's row (the `Job` model), for many jobs at once; columns not named take their
# server defaults (payload '{}', created_at/queued_at now()). Prepared once per connection.
INSERT_JOBS = """
INSERT INTO jobs (id, item_id, kind, status, celery_task_id)
SELECT job.id, job.item_id, $3, 'queued', job.id::text
FROM unnest($1::uuid[], $2::integer[]) AS job(id, item_id)
"""


class BrokerUnavailable(Exception):
    """The job's row is committed but Redis did not take its message (the reaper republishes it)."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"job {job_id} recorded but not queued: broker unavailable")
        self.job_id = job_id


@dataclass
class _Waiting:
    job_id: uuid.UUID
    item_id: int
    accepted: asyncio.Future[None]


@dataclass
class JobIntake:
    """The group committer of one event loop (see the module docstring)."""

    waiting: list[_Waiting] = field(default_factory=list)
    flushes: set[asyncio.Task[None]] = field(default_factory=set)

    async def accept(self, item_id: int) -> uuid.UUID:
        """Record and queue a job; returns its id once both are done.

        Raises `pg.DatabaseUnavailable` (nothing recorded) or `BrokerUnavailable` (recorded, not
        queued)."""
        entry = _Waiting(uuid.uuid4(), item_id, asyncio.get_running_loop().create_future())
        self.waiting.append(entry)
        if len(self.flushes) < MAX_CONCURRENT_FLUSHES:
            flush = asyncio.create_task(self._flush_while_waiting())
            self.flushes.add(flush)
            flush.add_done_callback(self.flushes.discard)
        await entry.accepted
        return entry.job_id

    async def _flush_while_waiting(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            try:
                await self._flush(batch)
            except BaseException as error:  # every waiter must be answered
                _fail(batch, error)
                if isinstance(error, asyncio.CancelledError):
                    raise

    async def _flush(self, batch: list[_Waiting]) -> None:
        job_ids = [entry.job_id for entry in batch]
        async with pg.connection() as connection:
            await connection.execute(
                INSERT_JOBS, job_ids, [entry.item_id for entry in batch], PROCESS_DATA
            )
        # Committed. Messages in batch order: LPUSH pushes its arguments one after the other onto
        # the head and the worker's BRPOP takes from the tail, so the first job runs first.
        queue = queue_of(process_data.name)
        envelopes = [
            task_envelope(process_data.name, str(job_id), [str(job_id)], queue)
            for job_id in job_ids
        ]
        try:
            await get_publisher().lpush(queue, *envelopes)
        except Exception:  # any failure to publish leaves the rows for the reaper
            for entry in batch:
                _settle(entry, BrokerUnavailable(entry.job_id))
            return
        for entry in batch:
            _settle(entry, None)


def _settle(entry: _Waiting, error: BaseException | None) -> None:
    if entry.accepted.done():  # the client went away; its job is recorded all the same
        return
    if error is None:
        entry.accepted.set_result(None)
    else:
        entry.accepted.set_exception(error)


def _fail(batch: list[_Waiting], error: BaseException) -> None:
    for entry in batch:
        _settle(entry, error if isinstance(error, Exception) else RuntimeError(str(error)))


_intakes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JobIntake]" = (
    weakref.WeakKeyDictionary()
)


def get_intake() -> JobIntake:
    """The running loop's intake (one per API process; tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    intake = _intakes.get(loop)
    if intake is None:
        intake = _intakes[loop] = JobIntake()
    return intake
