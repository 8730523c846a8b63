"""The transactional outbox (app/intake/outbox.py): the broker is off the accept path. Real
PostgreSQL, Redis and worker; the broker faulted by pointing the running loop's publisher at a port
where nothing listens, a dead API process played by outbox rows nobody is publishing."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from app.config import get_settings
from app.intake import outbox as outbox_module
from app.intake.broker import _publishers
from app.intake.outbox import get_outbox
from app.worker.liveness import CONSUMER_DEATHS
from tests.app.environment import WORKER_LOG
from tests.app.helpers import (
    create_queued_job,
    execute,
    job_row,
    wait_for_log_line,
    wait_for_task,
)

pytestmark = pytest.mark.anyio
DEAD_PORT = 1  # nothing listens there: connections are refused at once


def outbox_rows(task_id: str) -> int:
    from sqlalchemy import text

    from app.storage.db import get_sync_engine

    with get_sync_engine().connect() as connection:
        return int(
            connection.scalar(
                text("SELECT count(*) FROM outbox WHERE CAST(:id AS uuid) = ANY(task_ids)"),
                {"id": task_id},
            )
            or 0
        )


@pytest.fixture
async def broker_down(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """The running loop's publisher swapped for one whose Redis refuses connections."""
    assert (await client.get("/health")).status_code == 200
    loop = asyncio.get_running_loop()
    live = _publishers.get(loop)
    _publishers[loop] = Redis(port=DEAD_PORT, socket_connect_timeout=1)
    yield
    await _publishers[loop].aclose()
    if live is None:
        del _publishers[loop]
    else:
        _publishers[loop] = live


async def broker_back() -> None:
    loop = asyncio.get_running_loop()
    await _publishers.pop(loop).aclose()


@pytest.mark.usefixtures("worker")
async def test_broker_down_the_job_is_accepted_and_published_when_it_is_back(
    client: httpx.AsyncClient, broker_down: None
) -> None:
    response = await client.post("/process/11")
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    row = job_row(uuid.UUID(task_id))
    assert row is not None
    assert row["status"] == "queued"
    outbox = get_outbox()
    await outbox.finish_publishing(5)
    assert outbox.failed, "the publisher should have recorded the refused batch"
    assert outbox_rows(task_id) == 1
    # Still down: the relay keeps the row.
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises
        await outbox.relay_once()
    assert outbox_rows(task_id) == 1

    await broker_back()
    assert await outbox.relay_once() >= 1
    assert outbox_rows(task_id) == 0
    assert not outbox.failed
    done = await wait_for_task(client, task_id, {"SUCCESS", "FAILURE"})
    assert done["result"] == {"item_id": 11, "status": "processed"}


@pytest.mark.usefixtures("worker")
async def test_broker_down_a_notification_is_accepted_and_delivered_when_it_is_back(
    client: httpx.AsyncClient, broker_down: None
) -> None:
    message = f"outbox {uuid.uuid4()}"
    response = await client.post("/notifications", json={"user_id": 7, "message": message})
    assert response.status_code == 202, response.text
    await get_outbox().finish_publishing(5)
    assert outbox_rows(response.json()["task_id"]) == 1
    await broker_back()
    assert await get_outbox().relay_once() >= 1
    await wait_for_log_line(WORKER_LOG, message)


@pytest.mark.usefixtures("worker")
async def test_rows_of_a_process_that_died_before_publishing_are_relayed(
    client: httpx.AsyncClient,
) -> None:
    # A process committed a job and its outbox row, then died before its LPUSH.
    job_id = uuid.uuid4()
    after = get_settings().outbox_relay_after_seconds
    execute(
        "INSERT INTO jobs (id, item_id, kind, status, celery_task_id) "
        "VALUES (:id, 12, 'process_data', 'queued', CAST(:id AS text))",
        id=job_id,
    )
    execute(
        "INSERT INTO outbox (task_name, task_ids, created_at) VALUES "
        "('app.tasks.process_data', ARRAY[CAST(:id AS uuid)], "
        "now() - make_interval(secs => :age))",
        id=job_id,
        age=after / 2,
    )
    outbox = get_outbox()
    # Younger than OUTBOX_RELAY_AFTER_SECONDS: maybe its own process is still pushing it.
    await outbox.relay_once()
    assert outbox_rows(str(job_id)) == 1
    execute(
        "UPDATE outbox SET created_at = now() - make_interval(secs => :age) "
        "WHERE CAST(:id AS uuid) = ANY(task_ids)",
        id=job_id,
        age=after + 1,
    )
    assert await outbox.relay_once() >= 1
    assert outbox_rows(str(job_id)) == 0
    done = await wait_for_task(client, str(job_id), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"


async def test_published_rows_are_deleted_by_the_next_relay_pass(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/process/13")
    task_id = response.json()["task_id"]
    outbox = get_outbox()
    await outbox.finish_publishing(5)
    assert not outbox.failed
    assert outbox.published, "the batch should be waiting for its deletion"
    assert outbox_rows(task_id) == 1
    assert await outbox.relay_once() == 0  # deleted, not published again
    assert outbox_rows(task_id) == 0
    assert not outbox.published


@pytest.mark.usefixtures("worker")
async def test_after_a_broker_restart_unfinished_jobs_it_lost_are_published_again(
    client: httpx.AsyncClient,
) -> None:
    # A job whose message Redis lost (popped by a worker as Redis died, say): no outbox row, no
    # message in the queue or in the unacknowledged hash.
    lost = await create_queued_job(15)
    outbox = get_outbox()
    await outbox.relay_once()  # learns the broker's run_id
    publisher = Redis.from_url(get_settings().celery_broker_url)
    try:
        run_id = (await publisher.info("server"))["run_id"]
        await publisher.delete(f"taskstack:reconciled:{run_id}")
    finally:
        await publisher.aclose()
    outbox.broker_run_id = "a Redis that was running before"  # as after a restart
    assert await outbox.relay_once() >= 1
    done = await wait_for_task(client, str(lost), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    # Once per Redis run: a second process noticing the same restart does not do it again.
    outbox.broker_run_id = "a Redis that was running before"
    assert await outbox.relay_once() == 0


@pytest.mark.usefixtures("worker")
async def test_a_reconciliation_cut_off_half_way_is_done_by_the_next_pass(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping worker's lost message is brought back by the reconciliation of its death, which
    the API process that took it on may not finish: during a deploy that process is stopped too.
    Another process's next pass must do it (before, the death stayed marked as reconciled)."""
    lost = await create_queued_job(16)  # its message in no key, as a stopping worker loses it
    publisher = Redis.from_url(get_settings().celery_broker_url)
    try:
        await publisher.incr(CONSUMER_DEATHS)  # the death, as the rescuer counts it
    finally:
        await publisher.aclose()
    pushing = asyncio.Event()

    async def push_never_returning(batches: object) -> None:
        pushing.set()
        await asyncio.sleep(3600)

    stopping = get_outbox()
    monkeypatch.setattr(outbox_module, "push", push_never_returning)
    cut_off = asyncio.create_task(stopping.relay_once())
    await asyncio.wait_for(pushing.wait(), 30)
    cut_off.cancel()  # its process stopped between its claim of the death and its push
    with contextlib.suppress(asyncio.CancelledError):
        await cut_off
    monkeypatch.undo()

    assert await outbox_module.Outbox().relay_once() >= 1  # another API process's relay
    done = await wait_for_task(client, str(lost), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"


async def test_the_relay_stops_between_passes_never_in_the_middle_of_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passes: list[str] = []
    started = asyncio.Event()

    async def slow_pass(self: object) -> int:
        passes.append("started")
        started.set()
        await asyncio.sleep(0.3)
        passes.append("finished")
        return 0

    monkeypatch.setattr(outbox_module.Outbox, "relay_once", slow_pass)
    stopping = asyncio.Event()
    relay = asyncio.create_task(outbox_module.run_relay(stopping))
    await asyncio.wait_for(started.wait(), 30)
    stopping.set()
    await asyncio.wait_for(relay, 30)
    assert passes == ["started", "finished"]
