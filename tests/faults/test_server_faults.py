"""Redis stopped, or killed, and started mid-batch; PostgreSQL restarted mid-batch. Nothing is
restarted but the server itself: the API, the worker and beat must recover on their own, with the
shipped recovery defaults (tests/faults/conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx

from tests.faults.measure import (
    SETTLE_SECONDS,
    Submitter,
    accepted_ids,
    all_settled,
    batch_figures,
    last_started_after,
    pending_outbox_rows,
    report,
    wait_for_jobs,
)
from tests.faults.servers import START_SECONDS, AppProcesses, Stack, wait_until
from tests.faults.stats import effects_not_once, succeeded_count, worker_log_figures

# Spread over the outage: 4 lanes, one request every 0.1 s each, so requests arrive before,
# during and after it.
BATCH = 600
LANES = 4
PACE_SECONDS = 0.1
# The explicit bound: a request during an outage is answered, not held.
ANSWER_BOUND_SECONDS = 10.0
REDIS_OUTAGE_SECONDS = 10.0


def _readiness(api_url: str) -> httpx.Response:
    started = time.monotonic()
    response = httpx.get(f"{api_url}/health/ready", timeout=ANSWER_BOUND_SECONDS + 5)
    assert time.monotonic() - started < ANSWER_BOUND_SECONDS, "readiness held the request"
    return response


class RestartPolicy:
    """Starts the worker again when it exits, as the stack's restart policy (`unless-stopped`) does.

    On a lost broker connection Celery's consumer sometimes dies with "Unrecoverable error:
    AttributeError ... 'hostname'" (a race in kombu's Redis channel teardown, seen in
    celery/kombu#582 and its kin) instead of reconnecting; the container runtime restarts it.
    """

    def __init__(self, processes: AppProcesses, name: str) -> None:
        self.processes, self.name = processes, name
        self.worker = processes.start_worker(name)
        self.restarts = 0

    def check(self) -> None:
        if self.worker.poll() is not None:
            self.restarts += 1
            self.worker = self.processes.start_worker(self.name)


def _redis_outage(stack: Stack, scenario: str, take_down: Callable[[], None]) -> None:
    processes = stack.processes
    processes.start_api()
    processes.start_beat()
    worker = RestartPolicy(processes, "worker-1")
    submitter = Submitter(processes.api_url, BATCH, concurrency=LANES, pace=PACE_SECONDS).start()
    wait_until(lambda: len(submitter.results) >= BATCH // 5, START_SECONDS, "a fifth sent")

    down_at = time.time()
    take_down()
    # While Redis is down: a new job is accepted at once; readiness stays green and says why.
    started = time.monotonic()
    during = httpx.post(f"{processes.api_url}/process/1", timeout=ANSWER_BOUND_SECONDS + 5)
    during_seconds = time.monotonic() - started
    assert during.status_code == 202, during.text
    assert during_seconds < ANSWER_BOUND_SECONDS
    ready = _readiness(processes.api_url)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["broker"].startswith("failed"), ready.text
    time.sleep(max(0.0, REDIS_OUTAGE_SECONDS - (time.time() - down_at)))

    up_at = time.time()
    stack.redis.start()
    published_after = wait_until(
        lambda: pending_outbox_rows(stack.dsn, up_at) == 0,
        SETTLE_SECONDS,
        "the outbox relayed what Redis missed",
        0.05,
    )
    results = submitter.join()
    accepted = accepted_ids(results) | {uuid.UUID(during.json()["task_id"])}
    counts = wait_for_jobs(stack.dsn, accepted, on_poll=worker.check)

    def settled() -> bool:
        worker.check()
        return all_settled(stack.dsn)

    wait_until(settled, SETTLE_SECONDS, "every recorded job finished", 0.5)
    in_outage = [r for r in results if down_at <= r.at <= up_at]
    report(
        scenario,
        **batch_figures(results, counts, up_at),
        sent_during_outage=len(in_outage) + 1,
        accepted_during_outage=sum(1 for r in in_outage if r.status_code == 202) + 1,
        refused=sum(1 for r in results if r.status_code != 202),
        slowest_answer_during_outage_seconds=round(
            max([r.seconds for r in in_outage] + [during_seconds]), 3
        ),
        outage_seconds=round(up_at - down_at, 2),
        # From Redis back to the relay's publish of the last job accepted while it was away.
        pending_jobs_published_after_seconds=round(published_after, 2),
        # From Redis back to the start of the last job accepted before it was back: the relay's
        # publish of the pending jobs plus their wait in the queue.
        pending_jobs_all_started_after_seconds=last_started_after(stack.dsn, up_at),
        worker_restarts_by_restart_policy=worker.restarts,
        **worker_log_figures(processes, "worker-1"),
    )
    assert all(r.status_code == 202 for r in results), {r.status_code for r in results}
    assert all(r.seconds < ANSWER_BOUND_SECONDS for r in results)
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0


def test_redis_stopped_for_10_s_mid_batch(stack: Stack) -> None:
    _redis_outage(stack, "redis stopped 10 s mid-batch, then started", stack.redis.stop)


def test_redis_killed_mid_batch_and_started_10_s_later(stack: Stack) -> None:
    _redis_outage(stack, "redis SIGKILLed mid-batch, started 10 s later", stack.redis.kill)


def test_postgres_restarted_mid_batch(stack: Stack) -> None:
    processes = stack.processes
    api = processes.start_api()
    processes.start_beat()
    worker = processes.start_worker("worker-1")
    submitter = Submitter(processes.api_url, BATCH, concurrency=LANES, pace=PACE_SECONDS).start()
    wait_until(lambda: succeeded_count(stack.dsn) >= BATCH // 4, START_SECONDS, "a quarter done")

    fault_at = time.time()
    stack.postgres.restart()
    back_at = time.time()
    green_after = wait_until(
        lambda: _readiness(processes.api_url).status_code == 200,
        START_SECONDS,
        "readiness green",
        0.2,
    )
    results = submitter.join()
    counts = wait_for_jobs(stack.dsn, accepted_ids(results))
    wait_until(lambda: all_settled(stack.dsn), SETTLE_SECONDS, "every recorded job finished", 0.5)
    refused = [r for r in results if r.status_code != 202]
    report(
        "postgresql restarted mid-batch",
        **batch_figures(results, counts, fault_at),
        restart_seconds=round(back_at - fault_at, 2),
        readiness_green_after_restart_seconds=round(green_after, 2),
        refused=len(refused),
        refused_while_postgresql_down=sum(1 for r in refused if fault_at <= r.at <= back_at + 1),
        refused_status_codes=sorted({r.status_code for r in refused}, key=str),
        # Jobs cut off by the restart are retried by the worker itself (app/worker/tasks.py).
        jobs_created_before_fault_all_started_after_seconds=last_started_after(stack.dsn, fault_at),
        **worker_log_figures(processes, "worker-1"),
    )
    assert api.poll() is None, "the API recovered without a restart"
    assert worker.poll() is None, "the worker recovered without a restart"
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0
    # Refused only as "nothing recorded, retry": a 503 with Retry-After, never a 500.
    assert all(r.status_code in (202, 503) for r in results), [
        (r.status_code, r.detail) for r in refused
    ]
    assert all("database unavailable" in r.detail for r in refused), [r.detail for r in refused]
