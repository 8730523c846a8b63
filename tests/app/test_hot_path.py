"""The fast paths (docs/bench.md): POST /process's group commit, GET /task's finished answers,
the worker's one write per job. Real PostgreSQL, Redis and worker; faults by pointing the running
loop's pool at a port where nothing listens (the broker's: tests/app/test_outbox.py)."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import psycopg
import pytest

from app.api.finished_jobs import FinishedJobCache, get_finished_job_cache
from app.config import get_settings
from app.intake.group_commit import JobIntake
from app.storage import jobs, pg
from app.storage.models import ANONYMOUS_CLIENT
from tests.app.helpers import create_queued_job, execute, job_row, wait_for_task

pytestmark = pytest.mark.anyio
DEAD_PORT = 1  # nothing listens there: connections are refused at once


def record_flushes(
    monkeypatch: pytest.MonkeyPatch, *, delay: float = 0
) -> tuple[list[int], list[int]]:
    """Each flush's group size, and [flushes running now, most at once]; `delay` slows each
    flush down before its statement, as a slow commit would."""
    batches: list[int] = []
    at_once = [0, 0]
    flush = JobIntake._flush

    async def recording_flush(self: JobIntake, batch: list) -> None:  # type: ignore[type-arg]
        batches.append(len(batch))
        at_once[0] += 1
        at_once[1] = max(at_once)
        try:
            await asyncio.sleep(delay)
            await flush(self, batch)
        finally:
            at_once[0] -= 1

    monkeypatch.setattr(JobIntake, "_flush", recording_flush)
    return batches, at_once


@pytest.mark.usefixtures("worker")
async def test_concurrent_posts_share_inserts_and_every_job_runs(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches, _ = record_flushes(monkeypatch)
    responses = await asyncio.gather(*(client.post(f"/process/{n}") for n in range(64)))

    assert [response.status_code for response in responses] == [202] * 64
    task_ids = [response.json()["task_id"] for response in responses]
    assert len(set(task_ids)) == 64
    assert sum(batches) == 64
    assert max(batches) > 1, f"no two requests shared a flush: {batches}"
    # Each answer came after its row was committed: every row is there as soon as they return.
    for task_id in task_ids:
        row = job_row(uuid.UUID(task_id))
        assert row is not None
    for number, task_id in enumerate(task_ids):
        done = await wait_for_task(client, task_id, {"SUCCESS", "FAILURE"})
        assert done["status"] == "SUCCESS"
        assert done["result"] == {"item_id": number, "status": "processed"}


async def test_requests_arriving_during_a_flush_wait_for_it_and_go_together_in_the_next(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow commit: the second wave arrives during the first flush.
    batches, at_once = record_flushes(monkeypatch, delay=0.3)

    async def later(item_id: int) -> httpx.Response:
        await asyncio.sleep(0.1)
        return await client.post(f"/process/{item_id}")

    first = [client.post(f"/process/{n}") for n in range(8)]
    second = [later(n) for n in range(8, 16)]
    responses = await asyncio.gather(*first, *second)

    assert [response.status_code for response in responses] == [202] * 16
    # One flush at a time, so the groups grow with the load instead of splitting it.
    assert at_once[1] == 1, batches
    assert sum(batches) == 16
    assert len(batches) <= 3, batches  # the first one or few, then everything that waited


async def test_a_request_right_after_a_flush_is_flushed_too(client: httpx.AsyncClient) -> None:
    # One client, one request at a time: each arrives as the previous flush finishes. A flush
    # counted as running until its task's done callback left such a request waiting for good.
    for item_id in range(20):
        async with asyncio.timeout(30):  # a hang bound, not a timing assertion
            response = await client.post(f"/process/{item_id}")
        assert response.status_code == 202


async def test_database_down_is_503_with_retry_after_and_nothing_recorded(
    client: httpx.AsyncClient,
) -> None:
    loop = asyncio.get_running_loop()
    dead = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/none", min_size=0, max_size=1
    )
    pg._pools[loop] = dead
    try:
        response = await client.post("/process/3")
        status = await client.get(f"/task/{uuid.uuid4()}")
    finally:
        await pg.close_pool()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "database unavailable: ConnectionRefusedError"}
    assert status.status_code == 503


async def test_a_finished_job_is_answered_from_memory_until_its_purge(
    client: httpx.AsyncClient,
) -> None:
    job_id = await create_queued_job(5)
    execute(
        "UPDATE jobs SET status = 'succeeded', result = '{\"n\": 5}', finished_at = now() "
        "WHERE id = :id",
        id=job_id,
    )
    first = await client.get(f"/task/{job_id}")
    assert first.json()["status"] == "SUCCESS"
    execute("DELETE FROM jobs WHERE id = :id", id=job_id)
    # Final: no round trip, the same answer.
    again = await client.get(f"/task/{job_id}")
    assert again.status_code == 200
    assert again.json() == first.json()
    # Past the retention (when the purge may have removed it) the row is read again: gone.
    cache = get_finished_job_cache()
    later = datetime.now(UTC) + timedelta(days=get_settings().job_retention_days, seconds=1)
    assert cache.get((ANONYMOUS_CLIENT, job_id), later) is None
    assert (await client.get(f"/task/{job_id}")).status_code == 404


async def test_an_unfinished_job_is_read_every_time(client: httpx.AsyncClient) -> None:
    job_id = await create_queued_job(6)
    assert (await client.get(f"/task/{job_id}")).json()["status"] == "PENDING"
    execute("UPDATE jobs SET status = 'started' WHERE id = :id", id=job_id)
    assert (await client.get(f"/task/{job_id}")).json()["status"] == "STARTED"


def _max_age(response: httpx.Response) -> int:
    directives = [d.strip() for d in response.headers["cache-control"].split(",")]
    assert directives[0] == "public", directives
    assert "immutable" in directives, directives
    (max_age,) = (int(d.split("=")[1]) for d in directives if d.startswith("max-age="))
    return max_age


async def test_caches_in_front_may_keep_a_finished_answer_until_its_purge_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    job_id = await create_queued_job(7)
    unfinished = await client.get(f"/task/{job_id}")
    assert unfinished.headers["cache-control"] == "no-store"
    unknown = await client.get(f"/task/{uuid.uuid4()}")
    assert unknown.status_code == 404
    assert unknown.headers["cache-control"] == "no-store"
    # Finished three days ago: the purge may delete it retention - 3 days from now.
    execute(
        "UPDATE jobs SET status = 'succeeded', result = '{}', "
        "finished_at = now() - interval '3 days' WHERE id = :id",
        id=job_id,
    )
    left = timedelta(days=get_settings().job_retention_days - 3).total_seconds()
    routed = await client.get(f"/task/{job_id}")  # read from the row, then cached
    from_memory = await client.get(f"/task/{job_id}")  # the middleware's answer
    for response in (routed, from_memory):
        assert left - 60 <= _max_age(response) <= left, response.headers


async def test_with_the_cache_off_no_answer_may_be_kept(client: httpx.AsyncClient) -> None:
    job_id = await create_queued_job(8)
    execute(
        "UPDATE jobs SET status = 'succeeded', result = '{}', finished_at = now() WHERE id = :id",
        id=job_id,
    )
    cache = get_finished_job_cache()
    size = cache.max_entries
    cache.max_entries = 0
    try:
        answer = await client.get(f"/task/{job_id}")
    finally:
        cache.max_entries = size
    assert answer.json()["status"] == "SUCCESS"
    assert answer.headers["cache-control"] == "no-store"


def test_cache_holds_at_most_its_size_dropping_the_least_recently_read() -> None:
    cache = FinishedJobCache(max_entries=2, retention=timedelta(days=1))
    now = datetime.now(UTC)
    first, second, third = ((ANONYMOUS_CLIENT, uuid.uuid4()) for _ in range(3))
    cache.put(first, b"1", now)
    cache.put(second, b"2", now)
    assert cache.get(first, now) == b"1"  # `second` is now the least recently read
    cache.put(third, b"3", now)
    assert len(cache) == 2
    assert cache.get(second, now) is None
    assert cache.get(first, now) == b"1"
    assert cache.get(third, now) == b"3"


def test_cache_of_size_zero_keeps_nothing() -> None:
    cache = FinishedJobCache(max_entries=0, retention=timedelta(days=1))
    job_id = (ANONYMOUS_CLIENT, uuid.uuid4())
    cache.put(job_id, b"x", datetime.now(UTC))
    assert cache.get(job_id, datetime.now(UTC)) is None


async def test_one_write_finishes_a_job_counting_its_attempt_once() -> None:
    job_id = await create_queued_job(8)
    with psycopg.connect(get_settings().database_libpq_url, autocommit=True) as connection:
        claimed = jobs.claim(connection, job_id)
        assert claimed is not None
        assert (claimed.status, claimed.attempts, claimed.item_id) == ("queued", 0, 8)
        result = {"item_id": 8, "status": "processed"}
        assert jobs.finish(connection, job_id, result, count_attempt=True)
        # A second delivery finds it finished: nothing to claim, nothing to change.
        assert jobs.claim(connection, job_id) is None
        assert not jobs.finish(connection, job_id, {"other": True}, count_attempt=True)
    row = job_row(job_id)
    assert row is not None
    assert (row["status"], row["attempts"], row["result"]) == ("succeeded", 1, result)
    assert row["started_at"] is not None
    assert row["finished_at"] is not None


async def test_a_delivery_that_ran_started_is_not_counted_twice() -> None:
    job_id = await create_queued_job(9)
    from app.storage.db import get_sync_sessionmaker

    with get_sync_sessionmaker(durable=False)() as session:
        assert jobs.mark_started(session, job_id) == 1
    with psycopg.connect(get_settings().database_libpq_url, autocommit=True) as connection:
        assert jobs.finish(connection, job_id, {"ok": True}, count_attempt=False)
    row = job_row(job_id)
    assert row is not None
    assert row["attempts"] == 1


async def test_readiness_fails_when_the_hot_path_pool_cannot_reach_postgresql(
    client: httpx.AsyncClient,
) -> None:
    loop = asyncio.get_running_loop()
    pg._pools[loop] = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{DEAD_PORT}/none", min_size=0, max_size=1
    )
    try:
        response = await client.get("/health/ready")
    finally:
        await pg.close_pool()
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["database_pool"].startswith("failed: DatabaseUnavailable")
