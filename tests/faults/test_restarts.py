"""Every app process killed and started again, a dropped connection retried, a long job across a
broker restart: the Idempotency-Key and worker liveness under real faults (shipped defaults)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import time
import uuid

import httpx
import psycopg

from tests.faults.measure import (
    SETTLE_SECONDS,
    Submitter,
    accepted_ids,
    batch_figures,
    report,
    rows_per_item,
    wait_for_jobs,
)
from tests.faults.servers import START_SECONDS, Stack, children_of, wait_until
from tests.faults.stats import effects_not_once, succeeded_count, worker_log_figures
from tests.faults.test_server_faults import RestartPolicy

BATCH = 1000
DOWN_SECONDS = 3.0


def test_every_app_process_killed_and_started_again(stack: Stack) -> None:
    """API, both workers (parents and pool children) and beat SIGKILLed mid-batch, started again
    3 s later; the clients retry with an Idempotency-Key, as a careful client of any API does."""
    processes = stack.processes
    api = processes.start_api("api-1")
    beat = processes.start_beat("beat-1")
    workers = [processes.start_worker(f"worker-{n}") for n in (1, 2)]
    submitter = Submitter(
        processes.api_url, BATCH, key_prefix=secrets.token_hex(4), retry_seconds=SETTLE_SECONDS
    ).start()
    wait_until(lambda: succeeded_count(stack.dsn) >= BATCH // 4, 2 * START_SECONDS, "a quarter")

    fault_at = time.time()
    victims = [api.pid, beat.pid]
    for worker in workers:
        victims += [worker.pid, *children_of(worker.pid)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    for process in (api, beat, *workers):
        process.wait()
    time.sleep(DOWN_SECONDS)
    back_at = time.time()
    processes.start_api("api-2")
    processes.start_beat("beat-2")
    for n in (3, 4):
        processes.start_worker(f"worker-{n}")

    results = submitter.join(2 * SETTLE_SECONDS)
    counts = wait_for_jobs(stack.dsn, accepted_ids(results))
    rows = rows_per_item(stack.dsn)
    retried = [r for r in results if r.earlier]
    report(
        "every app process SIGKILLed mid-batch, started 3 s later (clients retry with a key)",
        **batch_figures(results, counts, fault_at),
        down_seconds=round(back_at - fault_at, 2),
        requests_retried=len(retried),
        failed_attempts_before_success=sum(len(r.earlier) for r in retried),
        failure_kinds=sorted(
            {detail.split(":")[0][:40] for r in retried for _, detail in r.earlier}
        ),
        answered_as_replay=sum(1 for r in results if r.replayed),
        items_with_more_than_one_row=sum(1 for n in rows.values() if n > 1),
        **worker_log_figures(processes, *(f"worker-{n}" for n in (1, 2, 3, 4))),
    )
    assert all(r.status_code == 202 for r in results), {r.status_code for r in results}
    assert counts.lost == 0
    assert effects_not_once(stack.dsn) == 0
    assert sorted(rows) == list(range(BATCH)), "every item recorded"
    assert all(n == 1 for n in rows.values()), "a retried request created a second job"


def test_a_dropped_connection_retried_with_its_key_returns_the_same_task(stack: Stack) -> None:
    processes = stack.processes
    processes.start_api()
    key = f"dropped-{uuid.uuid4()}"
    item = 4242
    with socket.create_connection(("127.0.0.1", processes.api_port), timeout=5) as raw:
        raw.sendall(
            f"POST /process/{item} HTTP/1.1\r\nHost: test\r\nIdempotency-Key: {key}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        # Reset at once, without reading the answer (SO_LINGER 0: RST, as a client that dies).
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def recorded() -> bool:
        return rows_per_item(stack.dsn).get(item, 0) == 1

    wait_until(recorded, START_SECONDS, "the dropped request's job was recorded")
    with psycopg.connect(stack.dsn) as connection:
        row = connection.execute("SELECT id FROM jobs WHERE item_id = %s", (item,)).fetchone()
    assert row is not None
    retry = httpx.post(
        f"{processes.api_url}/process/{item}", headers={"Idempotency-Key": key}, timeout=30
    )
    report(
        "connection dropped after the request, retried with its Idempotency-Key",
        first_request_recorded=True,
        retry_status=retry.status_code,
        retry_replayed=retry.headers.get("idempotent-replayed") == "true",
        rows_for_the_item=rows_per_item(stack.dsn)[item],
    )
    assert retry.status_code == 202
    assert retry.json()["task_id"] == str(row[0])
    assert retry.headers["idempotent-replayed"] == "true"
    assert rows_per_item(stack.dsn)[item] == 1


def test_a_long_job_across_a_redis_restart_runs_once(stack: Stack) -> None:
    """The consumer connection dies with Redis while its task runs on: liveness restores the
    messages of the dead connection, but not a task a live worker is still running."""
    processes = stack.processes
    processes.start_api()
    processes.env["JOB_WORK_SECONDS"] = "20"
    worker = RestartPolicy(processes, "worker-1")
    response = httpx.post(f"{processes.api_url}/process/7", timeout=30)
    assert response.status_code == 202
    job_id = response.json()["task_id"]

    def status() -> tuple[str, int]:
        with psycopg.connect(stack.dsn) as connection:
            row = connection.execute(
                "SELECT status::text, attempts FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
        assert row is not None
        return row[0], row[1]

    wait_until(lambda: status()[0] == "started", START_SECONDS, "the long job started")
    # Another rescuer, as in a stack of several workers; started only once worker-1 holds the job,
    # or it may take the job itself and finish it in 10 ms before "started" is ever seen (CI did).
    processes.env["JOB_WORK_SECONDS"] = "0.01"
    processes.start_worker("worker-2")
    restart_at = time.time()
    stack.redis.stop()
    time.sleep(2)
    stack.redis.start()

    def finished() -> bool:
        worker.check()
        return status()[0] == "succeeded"

    wait_until(finished, SETTLE_SECONDS, "the long job finished")
    finished_at = time.time()
    # Two more heartbeats than a rescue needs, so that a wrong restore would have happened.
    time.sleep(12)
    final, attempts = status()
    report(
        "20 s job on a live worker across a Redis restart",
        status=final,
        attempts=attempts,
        finished_after_restart_seconds=round(finished_at - restart_at, 2),
        worker_restarts_by_restart_policy=worker.restarts,
        **worker_log_figures(processes, "worker-1", "worker-2"),
    )
    # Also when the worker's consumer died of kombu's race on the lost connection (the restart
    # policy then starts it again): the dying worker ran the task to its end, and kept it reported.
    assert attempts == 1, "the job ran again while its worker was running it"
