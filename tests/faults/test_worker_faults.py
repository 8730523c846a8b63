"""A worker killed in the middle of a 1,000-job batch: its parent (a new worker started, as a
restart policy does; or another worker already running, as with several containers), a pool
child. With the shipped defaults (visibility timeout 1 h, reaper after 10 min): the jobs the dead
worker held come back through worker liveness (app/worker/liveness.py) within seconds."""

from __future__ import annotations

import os
import signal
import time

import psycopg

from tests.faults.measure import (
    Submitter,
    accepted_ids,
    batch_figures,
    count_jobs,
    report,
    wait_for_jobs,
)
from tests.faults.servers import START_SECONDS, Stack, children_of, wait_until
from tests.faults.stats import effects_not_once, succeeded_count, worker_log_figures

BATCH = 1000


def _wait_mid_batch(stack: Stack) -> None:
    """Until a quarter of the batch is done: the fault lands with most of it still queued."""
    wait_until(
        lambda: succeeded_count(stack.dsn) >= BATCH // 4,
        2 * START_SECONDS,
        f"{BATCH // 4} jobs succeeded",
        interval=0.05,
    )


def _in_flight(dsn: str) -> list[str]:
    """Jobs a worker was running at this moment (their row says started)."""
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        rows = connection.execute("SELECT id::text FROM jobs WHERE status = 'started'").fetchall()
    return [row[0] for row in rows]


def _finished_after(dsn: str, job_ids: list[str], since: float) -> float | None:
    """Seconds from `since` to the last of these jobs' success (None: one is not finished)."""
    if not job_ids:
        return 0.0
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        row = connection.execute(
            "SELECT count(*) FILTER (WHERE status <> 'succeeded'),"
            " extract(epoch FROM max(finished_at)) FROM jobs WHERE id::text = ANY(%s)",
            (job_ids,),
        ).fetchone()
    assert row is not None
    return None if row[0] else round(float(row[1]) - since, 2)


def test_worker_parent_sigkill_mid_batch_loses_nothing(stack: Stack) -> None:
    processes = stack.processes
    processes.start_api()
    processes.start_beat()
    worker = processes.start_worker("worker-1")
    submitter = Submitter(processes.api_url, BATCH).start()
    _wait_mid_batch(stack)

    children = children_of(worker.pid)
    fault_at = time.time()
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # The pool children, orphaned, are killed too (what `docker kill` does to a container).
    for child in children:
        os.kill(child, signal.SIGKILL)
    in_flight = _in_flight(stack.dsn)
    done_at_fault = succeeded_count(stack.dsn)
    # What a restart policy does: a worker comes back.
    processes.start_worker("worker-2")

    results = submitter.join()
    counts = wait_for_jobs(stack.dsn, accepted_ids(results))
    report(
        "worker parent SIGKILL mid-batch, new worker started",
        **batch_figures(results, counts, fault_at),
        succeeded_before_fault=done_at_fault,
        jobs_in_flight_at_fault=len(in_flight),
        in_flight_finished_after_seconds=_finished_after(stack.dsn, in_flight, fault_at),
        **worker_log_figures(processes, "worker-1", "worker-2"),
    )
    assert all(result.status_code == 202 for result in results), [
        (r.status_code, r.detail) for r in results if r.status_code != 202
    ]
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0
    assert count_jobs(stack.dsn, accepted_ids(results)).jobs == BATCH


def test_worker_pool_child_sigkill_mid_batch_loses_nothing(stack: Stack) -> None:
    processes = stack.processes
    processes.start_api()
    processes.start_beat()
    worker = processes.start_worker("worker-1")
    submitter = Submitter(processes.api_url, BATCH).start()
    _wait_mid_batch(stack)

    children = children_of(worker.pid)
    assert len(children) == 2, children
    fault_at = time.time()
    os.kill(children[0], signal.SIGKILL)
    done_at_fault = succeeded_count(stack.dsn)

    results = submitter.join()
    counts = wait_for_jobs(stack.dsn, accepted_ids(results))
    # The parent replaced its child by itself: the same worker process finished the batch.
    assert worker.poll() is None
    report(
        "worker pool child SIGKILL mid-batch",
        **batch_figures(results, counts, fault_at),
        succeeded_before_fault=done_at_fault,
        **worker_log_figures(processes, "worker-1"),
    )
    assert all(result.status_code == 202 for result in results), [
        (r.status_code, r.detail) for r in results if r.status_code != 202
    ]
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0
    assert count_jobs(stack.dsn, accepted_ids(results)).jobs == BATCH


def test_one_of_two_workers_sigkilled_the_other_takes_its_jobs(stack: Stack) -> None:
    """`docker kill` of one worker container among several: nothing is restarted."""
    processes = stack.processes
    processes.start_api()
    processes.start_beat()
    victim = processes.start_worker("worker-1")
    processes.start_worker("worker-2")
    submitter = Submitter(processes.api_url, BATCH).start()
    _wait_mid_batch(stack)

    children = children_of(victim.pid)
    fault_at = time.time()
    for pid in (victim.pid, *children):
        os.kill(pid, signal.SIGKILL)
    victim.wait()
    in_flight = _in_flight(stack.dsn)
    done_at_fault = succeeded_count(stack.dsn)

    results = submitter.join()
    counts = wait_for_jobs(stack.dsn, accepted_ids(results))
    report(
        "one of two workers SIGKILLed (parent and children), not restarted",
        **batch_figures(results, counts, fault_at),
        succeeded_before_fault=done_at_fault,
        jobs_in_flight_at_fault=len(in_flight),
        in_flight_finished_after_seconds=_finished_after(stack.dsn, in_flight, fault_at),
        **worker_log_figures(processes, "worker-1", "worker-2"),
    )
    assert all(result.status_code == 202 for result in results), [
        (r.status_code, r.detail) for r in results if r.status_code != 202
    ]
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0
    assert count_jobs(stack.dsn, accepted_ids(results)).jobs == BATCH
