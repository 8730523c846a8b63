"""A worker killed in the middle of a 1,000-job batch: its parent, then separately a pool child."""

from __future__ import annotations

import os
import signal
import time

from tests.faults.conftest import Stack
from tests.faults.measure import (
    Submitter,
    accepted_ids,
    batch_figures,
    count_jobs,
    report,
    wait_for_jobs,
)
from tests.faults.servers import START_SECONDS, children_of, wait_until
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
    processes.orphans.extend(children)
    done_at_fault = succeeded_count(stack.dsn)
    # What a restart policy does: a worker comes back.
    processes.start_worker("worker-2")

    results = submitter.join()
    counts = wait_for_jobs(stack.dsn, accepted_ids(results))
    report(
        "worker parent SIGKILL mid-batch",
        **batch_figures(results, counts, fault_at),
        succeeded_before_fault=done_at_fault,
        **worker_log_figures(processes, "worker-1", "worker-2"),
    )
    assert all(result.status_code == 202 for result in results), "the API is not faulted here"
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
    assert all(result.status_code == 202 for result in results), "the API is not faulted here"
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0
    assert count_jobs(stack.dsn, accepted_ids(results)).jobs == BATCH
