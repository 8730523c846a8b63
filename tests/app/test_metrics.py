"""Prometheus metrics (docs/observability.md): the API's and the worker's counters move by exactly
what was done, across processes; the stack-wide gauges read PostgreSQL and the broker at scrape
time, and a source that fails is left out of a scrape that still answers."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.api.deps import get_broker_client
from app.main import app
from app.worker.tasks import publish_job, requeue_stale_jobs
from tests.app.environment import (
    REDIS_HOST_URL,
    REPO_ROOT,
    RUN_DIR,
    WORKER_LOG,
    WORKER_METRICS_PORT,
    claim_empty_redis_db,
    free_port,
    stop_process,
)
from tests.app.helpers import (
    SETTLE_SECONDS,
    create_queued_job,
    execute,
    wait_for_log_line,
    wait_for_task,
)

pytestmark = pytest.mark.anyio

POST_ROUTE = {"route": "/process/{item_id}", "method": "POST", "status": "202"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`; 0 when absent (a counter not incremented yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def api_metrics(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def worker_metrics() -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


async def wait_for_worker_value(name: str, target: float, **labels: str) -> Samples:
    """Poll the worker's /metrics until `name` reaches `target` (the counter moves right after
    the commit that the API already shows), then a moment more: it must not go past it."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while value(samples := await worker_metrics(), name, **labels) < target:
        assert time.monotonic() < deadline, f"{name}{labels} = {value(samples, name, **labels)}"
        await anyio.sleep(0.1)
    await anyio.sleep(1)
    return await worker_metrics()


FINISHED = "taskstack_jobs_finished_total"
SUCCEEDED = {"task": "process_data", "status": "succeeded"}


async def test_posts_are_counted_by_the_api_and_their_jobs_by_the_worker(
    client: httpx.AsyncClient, worker: subprocess.Popen[bytes]
) -> None:
    jobs_sent = 5
    api_before = await api_metrics(client)
    worker_before = await worker_metrics()
    task_ids = []
    for item in range(jobs_sent):
        response = await client.post(f"/process/{item}")
        assert response.status_code == 202, response.text
        task_ids.append(response.json()["task_id"])
    api_after = await api_metrics(client)

    for name, labels in (
        ("taskstack_jobs_enqueued_total", {}),
        ("taskstack_http_requests_total", POST_ROUTE),
        (
            "taskstack_http_request_duration_seconds_count",
            {"route": POST_ROUTE["route"], "method": "POST"},
        ),
    ):
        rose = value(api_after, name, **labels) - value(api_before, name, **labels)
        assert rose == jobs_sent, (name, labels)
    assert value(api_after, "taskstack_http_requests_in_flight") == 0
    # One request at a time: each group commit held one job.
    batches = "taskstack_group_commit_batch_size_bucket"
    assert value(api_after, batches, le="1.0") - value(api_before, batches, le="1.0") == jobs_sent
    # Scrapes are not requests of the traffic.
    assert not any(
        dict(labels).get("route") == "/metrics"
        for name, labels in api_after
        if name == "taskstack_http_requests_total"
    )

    for task_id in task_ids:
        await wait_for_task(client, task_id, {"SUCCESS"})
    target = value(worker_before, FINISHED, **SUCCEEDED) + jobs_sent
    worker_after = await wait_for_worker_value(FINISHED, target, **SUCCEEDED)
    assert value(worker_after, FINISHED, **SUCCEEDED) == target
    for histogram in ("taskstack_job_run_seconds_count", "taskstack_job_queue_wait_seconds_count"):
        rose = value(worker_after, histogram, task="process_data") - value(
            worker_before, histogram, task="process_data"
        )
        assert rose == jobs_sent, histogram

    # A second message for a finished job changes nothing, and is not counted.
    publish_job(uuid.UUID(task_ids[0]))
    await wait_for_log_line(WORKER_LOG, f"job {task_ids[0]} is finished or unknown")
    await anyio.sleep(0.5)
    assert value(await worker_metrics(), FINISHED, **SUCCEEDED) == target


async def test_a_retry_is_counted(
    client: httpx.AsyncClient, worker: subprocess.Popen[bytes]
) -> None:
    before = await worker_metrics()
    job_id = await create_queued_job(11, {"fail_times": 1})
    publish_job(job_id)
    await wait_for_task(client, str(job_id), {"SUCCESS"})
    target = value(before, FINISHED, **SUCCEEDED) + 1
    after = await wait_for_worker_value(FINISHED, target, **SUCCEEDED)
    retries = "taskstack_job_retries_total"
    assert (
        value(after, retries, task="process_data") - value(before, retries, task="process_data")
        == 1
    )


async def test_a_failed_job_and_the_reapers_requeue_are_counted(
    client: httpx.AsyncClient, worker: subprocess.Popen[bytes]
) -> None:
    failed = {"task": "process_data", "status": "failed"}
    before = await worker_metrics()
    # More failures than JOB_MAX_RETRIES (2): two retries, then failed.
    doomed = await create_queued_job(12, {"fail_times": 5})
    publish_job(doomed)
    await wait_for_task(client, str(doomed), {"FAILURE"})
    after = await wait_for_worker_value(FINISHED, value(before, FINISHED, **failed) + 1, **failed)
    assert value(after, FINISHED, **failed) == value(before, FINISHED, **failed) + 1
    retries = "taskstack_job_retries_total"
    rose = value(after, retries, task="process_data") - value(before, retries, task="process_data")
    assert rose == 2

    # A job recorded an hour ago and never published: the reaper sends it again.
    stranded = await create_queued_job(13)
    execute(
        "UPDATE jobs SET created_at = now() - interval '1 hour',"
        " queued_at = now() - interval '1 hour' WHERE id = :id",
        id=stranded,
    )
    requeued = "taskstack_jobs_requeued_total"
    republished = requeue_stale_jobs.apply_async().get(timeout=SETTLE_SECONDS)
    assert republished >= 1
    target = value(before, requeued, by="reaper") + republished
    after = await wait_for_worker_value(requeued, target, by="reaper")
    assert value(after, requeued, by="reaper") == target
    await wait_for_task(client, str(stranded), {"SUCCESS"})


async def test_a_replay_is_counted_and_enqueues_nothing(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    before = await api_metrics(client)
    first = await client.post("/process/3", headers=key)
    again = await client.post("/process/3", headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["Idempotent-Replayed"] == "true"
    after = await api_metrics(client)
    replays, enqueued = "taskstack_idempotent_replays_total", "taskstack_jobs_enqueued_total"
    assert value(after, replays) - value(before, replays) == 1
    assert value(after, enqueued) - value(before, enqueued) == 1
    assert (
        value(after, "taskstack_http_requests_total", **POST_ROUTE)
        - value(before, "taskstack_http_requests_total", **POST_ROUTE)
        == 2
    )


async def test_requests_are_labelled_by_route_template(client: httpx.AsyncClient) -> None:
    before = await api_metrics(client)
    unknown = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in unknown:
        assert (await client.get(f"/task/{task_id}")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.get("/health")).status_code == 200
    after = await api_metrics(client)
    requests = "taskstack_http_requests_total"
    task = {"route": "/task/{task_id}", "method": "GET", "status": "404"}
    other = {"route": "other", "method": "GET", "status": "404"}
    assert value(after, requests, **task) - value(before, requests, **task) == 3
    assert value(after, requests, **other) - value(before, requests, **other) == 1
    routes = {dict(labels).get("route") for name, labels in after if name == requests}
    assert not routes & {f"/task/{task_id}" for task_id in unknown}
    assert not any(route and route.startswith(("/health", "/metrics")) for route in routes)


async def test_stack_gauges_read_the_tables(client: httpx.AsyncClient) -> None:
    samples = await api_metrics(client)
    for gauge in (
        "taskstack_outbox_pending_rows",
        "taskstack_outbox_oldest_age_seconds",
        "taskstack_oldest_pending_job_age_seconds",
        "taskstack_workers_alive",
    ):
        assert gauge in names(samples), gauge
    # A queued job no message names: the oldest job not yet started is at least this old.
    await create_queued_job(21)
    await anyio.sleep(1.2)
    assert value(await api_metrics(client), "taskstack_oldest_pending_job_age_seconds") >= 1


async def test_backup_gauges_read_what_the_backup_role_recorded(client: httpx.AsyncClient) -> None:
    # What infra/postgres/backup-due.sql writes; this PostgreSQL does not archive its WAL.
    execute(
        "INSERT INTO backup_status (kind, label, stopped_at, bytes, updated_at) VALUES "
        "('full', '20261207-100000F', now() - interval '2 hours', 1000, now()), "
        "('diff', '20261207-100000F_20261207-110000D', now() - interval '1 hour', 10, now()), "
        "('repository', NULL, NULL, 123456, now())"
    )
    try:
        samples = await api_metrics(client)
    finally:
        execute("DELETE FROM backup_status")
    assert 7200 <= value(samples, "taskstack_backup_age_seconds", kind="full") < 7300
    assert 3600 <= value(samples, "taskstack_backup_age_seconds", kind="diff") < 3700
    assert value(samples, "taskstack_backup_repository_bytes") == 123456
    assert value(samples, "taskstack_wal_archiving") == 0
    assert value(samples, "taskstack_wal_archive_pending_segments") == 0
    assert value(samples, "taskstack_wal_archive_oldest_pending_age_seconds") == 0


@pytest.fixture
def idle_broker() -> Iterator[str]:
    """Another empty Redis db, claimed like the run's: a broker no worker consumes from."""
    number = claim_empty_redis_db()
    url = f"{REDIS_HOST_URL}/{number}"
    yield url
    client = redis.Redis.from_url(url)
    try:
        client.delete(*client.keys("*"))  # our own keys only: the db was empty when claimed
    finally:
        client.close()


@pytest.fixture
async def broker_override(idle_broker: str) -> AsyncIterator[str]:
    broker = Redis.from_url(idle_broker)
    app.dependency_overrides[get_broker_client] = lambda: broker
    yield idle_broker
    await broker.aclose()


async def test_queue_depth_counts_every_list_of_a_queue(
    client: httpx.AsyncClient, broker_override: str
) -> None:
    samples = await api_metrics(client)
    depth = "taskstack_queue_depth"
    assert value(samples, depth, queue="celery") == 0
    assert value(samples, depth, queue="maintenance") == 0
    assert value(samples, "taskstack_workers_alive") == 0
    pusher = redis.Redis.from_url(broker_override)
    try:
        pusher.lpush("celery", *[b"m"] * 7)
        pusher.lpush("celery\x06\x163", *[b"m"] * 2)  # kombu's list for priority 3
        pusher.lpush("maintenance", b"m")
    finally:
        pusher.close()
    samples = await api_metrics(client)
    assert value(samples, depth, queue="celery") == 9
    assert value(samples, depth, queue="maintenance") == 1


async def test_a_failing_source_is_left_out(client: httpx.AsyncClient) -> None:
    unreachable = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1, socket_timeout=1
    )
    app.dependency_overrides[get_broker_client] = lambda: unreachable
    try:
        samples = await api_metrics(client)
    finally:
        await unreachable.aclose()
    assert "taskstack_queue_depth" not in names(samples)
    assert "taskstack_workers_alive" not in names(samples)
    # PostgreSQL's gauges and the processes' own metrics are still there.
    assert "taskstack_outbox_pending_rows" in names(samples)
    assert "taskstack_jobs_enqueued_total" in names(samples)


@pytest.fixture
def api_processes() -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`uvicorn --workers 2` on the run's database, in multiprocess mode (a directory the app
    makes)."""
    port = free_port()
    directory = RUN_DIR / "api-metrics" / uuid.uuid4().hex
    log = RUN_DIR / "uvicorn.log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "app.main:app", "--workers", "2"),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"uvicorn did not answer; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    try:
        yield url, directory, process
    finally:
        stop_process(process)


async def test_counts_add_up_across_api_processes(
    api_processes: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, directory, process = api_processes
    sent = 40

    async def post(item: int) -> None:
        # A connection each: the kernel spreads them over both processes.
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post(f"/process/{item}")
        assert response.status_code == 202, response.text

    await asyncio.gather(*(post(item) for item in range(sent)))
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "taskstack_jobs_enqueued_total") == sent
    assert value(samples, "taskstack_http_requests_total", **POST_ROUTE) == sent
    assert value(samples, "taskstack_http_requests_in_flight") == 0
    # Both processes wrote their files there.
    pids = {path.stem.rsplit("_", 1)[-1] for path in directory.glob("counter_*.db")}
    assert len(pids) >= 2, sorted(directory.iterdir())

    # A process that ends stops counting in the live gauge (its lifespan marks it dead).
    assert list(directory.glob("gauge_livesum_*.db"))
    stop_process(process)
    assert process.returncode == 0
    assert not list(directory.glob("gauge_livesum_*.db"))
