"""Accepting jobs in groups: POST /process's group commit.

Each request hands its item id (and its Idempotency-Key, if any) to the running loop's `JobIntake`
and waits. A flush takes every request waiting at that moment and records their rows with ONE
statement: a multi-row INSERT of the jobs and of their outbox row (`app.intake.outbox`), plus their
keys when some were sent. When it returns, the rows are committed (autocommit) and each request is
answered; the batch's messages then go to the broker through the outbox, after the answers and
whatever Redis is doing. So 32 concurrent requests cost one round trip to PostgreSQL before their
202, and the only reason for a 503 is that PostgreSQL did not take them (nothing recorded).
Requests that arrive during a flush wait for the next one (`MAX_CONCURRENT_FLUSHES` run at once),
so a lone request is never delayed by a timer, and under load the groups grow with the load.
"""

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field

import asyncpg

from app.intake import idempotency
from app.intake.outbox import OutboxBatch, get_outbox
from app.metrics.api import GROUP_COMMIT_BATCH, JOBS_ENQUEUED
from app.storage import pg
from app.storage.jobs import PROCESS_DATA
from app.storage.models import ANONYMOUS_CLIENT
from app.tracing import current_traceparent
from app.worker.tasks import process_data

MAX_BATCH = 256
# One: a second flush running beside the first split the waiting requests into smaller groups,
# each costing a statement, a WAL flush and an LPUSH; with one, POST /process goes faster
# (measured: docs/bench.md, "The front door's cost").
MAX_CONCURRENT_FLUSHES = 1

# Queued jobs' rows (the `Job` model) and their outbox row, in one statement; columns not named
# take their server defaults (payload '{}', created_at/queued_at now()). Prepared once per
# connection. A data-modifying CTE runs whether or not the query reads it.
# Each job's client ($6) is its request's (app/api/clients.py).
INSERT_JOBS = """
WITH new_jobs AS (
    INSERT INTO jobs (id, item_id, kind, status, celery_task_id, client_id)
    SELECT job.id, job.item_id, $3, 'queued', job.id::text, job.client_id
    FROM unnest($1::uuid[], $2::integer[], $6::integer[]) AS job(id, item_id, client_id)
)
INSERT INTO outbox (task_name, task_ids, traceparents) VALUES ($4, $1::uuid[], $5::text[])
RETURNING id
"""

# The same with Idempotency-Keys ($5 keys, $6 fingerprints, $7 their jobs' ids, $9 their clients;
# $10 every job's client): a job whose key its client already recorded is not created; the keys
# recorded now come back with the outbox row's id.
INSERT_KEYED_JOBS = """
WITH claimed AS (
    INSERT INTO idempotency_keys (client_id, key, fingerprint, task_id)
    SELECT k.client_id, k.key, k.fingerprint, k.task_id
    FROM unnest($9::integer[], $5::text[], $6::bytea[], $7::uuid[])
        AS k(client_id, key, fingerprint, task_id)
    ON CONFLICT (client_id, key) DO NOTHING
    RETURNING task_id
), new_jobs AS (
    INSERT INTO jobs (id, item_id, kind, status, celery_task_id, client_id)
    SELECT job.id, job.item_id, $3, 'queued', job.id::text, job.client_id
    FROM unnest($1::uuid[], $2::integer[], $10::integer[]) AS job(id, item_id, client_id)
    WHERE job.id <> ALL($7::uuid[]) OR job.id IN (SELECT task_id FROM claimed)
    RETURNING id
), batch AS (
    INSERT INTO outbox (task_name, task_ids, traceparents)
    SELECT $4, array_agg(job.id ORDER BY job.n), array_agg(job.traceparent ORDER BY job.n)
    FROM new_jobs JOIN unnest($1::uuid[], $8::text[]) WITH ORDINALITY AS job(id, traceparent, n)
    USING (id)
    HAVING count(*) > 0
    RETURNING id
)
SELECT (SELECT id FROM batch) AS outbox_id, ARRAY(SELECT task_id FROM claimed) AS claimed
"""


@dataclass
class _Waiting:
    job_id: uuid.UUID
    item_id: int
    key: str | None
    accepted: asyncio.Future[tuple[uuid.UUID, bool]]
    # The request's trace (app/tracing.py), carried by the job's message.
    traceparent: str | None = None
    # The request's client (app/api/clients.py): the job's owner, the key's scope.
    client_id: int = ANONYMOUS_CLIENT

    @property
    def scoped_key(self) -> tuple[int, str]:
        return self.client_id, self.key or ""

    @property
    def fingerprint(self) -> bytes:
        return idempotency.fingerprint("POST", f"/process/{self.item_id}")


@dataclass
class JobIntake:
    """The group committer of one event loop (see the module docstring)."""

    waiting: list[_Waiting] = field(default_factory=list)
    # Flushes started and not yet past their last look at `waiting`. Counted in the flush itself,
    # not by the task's done callback: that runs a loop iteration later, and a request arriving in
    # between would see a flush that no longer looks and wait for good.
    flushing: int = 0
    flushes: set[asyncio.Task[None]] = field(default_factory=set)  # references, against the GC

    async def accept(
        self, item_id: int, key: str | None = None, client_id: int = ANONYMOUS_CLIENT
    ) -> tuple[uuid.UUID, bool]:
        """Record a job of `client_id`; returns its id once committed, and whether it is a replay
        (the key's first request from this client recorded it). Its message is published
        afterwards (`app.intake.outbox`).

        Raises `pg.DatabaseUnavailable` (nothing recorded) or
        `idempotency.IdempotencyKeyReused`."""
        entry = _Waiting(
            uuid.uuid4(),
            item_id,
            key,
            asyncio.get_running_loop().create_future(),
            current_traceparent(),
            client_id,
        )
        self.waiting.append(entry)
        if self.flushing < MAX_CONCURRENT_FLUSHES:
            self.flushing += 1
            flush = asyncio.create_task(self._flush_while_waiting())
            self.flushes.add(flush)
            flush.add_done_callback(self.flushes.discard)
        return await entry.accepted

    async def _flush_while_waiting(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
                try:
                    await self._flush(batch)
                except BaseException as error:  # every waiter must be answered
                    _fail(batch, error)
                    if isinstance(error, asyncio.CancelledError):
                        raise
        finally:
            # No await between the last look at `waiting` and this: whoever arrives after it
            # starts a flush of their own.
            self.flushing -= 1

    async def _flush(self, batch: list[_Waiting]) -> None:
        job_ids = [entry.job_id for entry in batch]
        item_ids = [entry.item_id for entry in batch]
        traceparents = {entry.job_id: entry.traceparent for entry in batch}
        keyed = [entry for entry in batch if entry.key is not None]
        committed = False
        try:
            async with pg.connection() as connection:
                if not keyed:
                    outbox_id = await connection.fetchval(
                        INSERT_JOBS,
                        job_ids,
                        item_ids,
                        PROCESS_DATA,
                        process_data.name,
                        list(traceparents.values()),
                        [entry.client_id for entry in batch],
                    )
                    created = job_ids
                else:
                    outbox_id, created = await self._insert_keyed(connection, batch, keyed)
                committed = True
        except pg.DatabaseUnavailable:
            # The connection broke after the statement returned (a PostgreSQL restart, seen on
            # the rehearsed prod stack): the rows are committed, so these are 202s, not 503s.
            if not committed:
                raise
        # Committed: answer, then publish (the outbox holds the messages until the broker does).
        if created:
            GROUP_COMMIT_BATCH.observe(len(created))
            JOBS_ENQUEUED.inc(len(created))
        created_ids = set(created)
        for entry in batch:
            if entry.job_id in created_ids:
                _settle(entry, (entry.job_id, False))
        if outbox_id is not None:
            get_outbox().publish_soon(
                OutboxBatch(
                    outbox_id,
                    process_data.name,
                    created,
                    traceparents=[traceparents[job_id] for job_id in created],
                )
            )

    async def _insert_keyed(
        self, connection: asyncpg.Connection, batch: list[_Waiting], keyed: list[_Waiting]
    ) -> tuple[int | None, list[uuid.UUID]]:
        # The first request of the batch with a key (of its client) claims it; a repeat of the
        # key within the same batch is answered like any later repeat.
        first: dict[tuple[int, str], _Waiting] = {}
        for entry in keyed:
            first.setdefault(entry.scoped_key, entry)
        claiming = list(first.values())
        claiming_ids = {entry.job_id for entry in claiming}
        inserting = [e for e in batch if e.key is None or e.job_id in claiming_ids]
        row = await connection.fetchrow(
            INSERT_KEYED_JOBS,
            [entry.job_id for entry in inserting],
            [entry.item_id for entry in inserting],
            PROCESS_DATA,
            process_data.name,
            [entry.key for entry in claiming],
            [entry.fingerprint for entry in claiming],
            [entry.job_id for entry in claiming],
            [entry.traceparent for entry in inserting],
            [entry.client_id for entry in claiming],
            [entry.client_id for entry in inserting],
        )
        assert row is not None
        claimed = set(row["claimed"])
        replays = [entry for entry in keyed if entry.job_id not in claimed]
        if replays:
            records = await idempotency.recorded(
                connection, sorted({entry.scoped_key for entry in replays})
            )
            for entry in replays:
                try:
                    task_id = idempotency.replay(
                        entry.key or "", entry.fingerprint, records.get(entry.scoped_key)
                    )
                    _settle(entry, (task_id, True))
                except Exception as error:
                    _settle(entry, error)
        created = [entry.job_id for entry in batch if entry.key is None or entry.job_id in claimed]
        return row["outbox_id"], created


def _settle(entry: _Waiting, outcome: tuple[uuid.UUID, bool] | BaseException) -> None:
    if entry.accepted.done():  # the client went away; its job is recorded all the same
        return
    if isinstance(outcome, BaseException):
        entry.accepted.set_exception(outcome)
    else:
        entry.accepted.set_result(outcome)


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
