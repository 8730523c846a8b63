"""Submitting batches through the real API and counting their jobs from the database.

Definitions (RELIABILITY.md):
- sent: POST /process requests made; accepted: those answered 202 (the client holds a task id).
- succeeded: accepted jobs whose row ends `succeeded`; lost: accepted jobs that do not (must be 0).
- duplicated deliveries: task executions beyond one per job, i.e. `sum(attempts) - jobs` over the
  jobs of the batch (`attempts` counts each delivery that passed the idempotent `queued|started|
  retrying -> started` transition). The effect, the `-> succeeded` transition, is one conditional
  UPDATE, so it is applied once per job however many deliveries there are.
- recovery: seconds from the fault to the moment the last accepted job succeeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.faults.servers import REPO_ROOT

REPORT_PATH = REPO_ROOT / "artifacts" / "reliability.jsonl"
# Generous: recovery waits for the visibility timeout or a reaper pass on a noisy machine.
SETTLE_SECONDS = 180


@dataclass
class Submission:
    item_id: int
    status_code: int | None  # None: no answer (connection error or client timeout)
    task_id: str | None
    seconds: float
    at: float  # wall clock when the request was sent
    detail: str = ""
    # Answers before the last, for a client that retries: (status code or None, detail).
    earlier: list[tuple[int | None, str]] = field(default_factory=list)
    replayed: bool = False  # answered `Idempotent-Replayed: true`


@dataclass
class Submitter:
    """POSTs /process/{i} for i in range(count) from a thread, `concurrency` at a time."""

    api_url: str
    count: int
    concurrency: int = 16
    # Seconds between two requests of one lane: spreads a batch over an outage window.
    pace: float = 0.0
    request_timeout: float = 30.0
    # A client that retries (on no answer or a 503) with an Idempotency-Key `<prefix>-<item>`,
    # for at most `retry_seconds`; None: one request per item, no key (the tutorial's client).
    key_prefix: str | None = None
    retry_seconds: float = 60.0
    results: list[Submission] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> Submitter:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def join(self, seconds: float = SETTLE_SECONDS) -> list[Submission]:
        assert self._thread is not None
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"submitting {self.count} jobs took over {seconds} s"
        return self.results

    async def _run(self) -> None:
        next_item = iter(range(self.count))
        timeout = httpx.Timeout(self.request_timeout)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=timeout, limits=limits) as http:

            async def lane() -> None:
                for item_id in next_item:
                    self.results.append(await self._submit(http, item_id))
                    if self.pace:
                        await asyncio.sleep(self.pace)

            await asyncio.gather(*(lane() for _ in range(self.concurrency)))

    async def _submit(self, http: httpx.AsyncClient, item_id: int) -> Submission:
        if self.key_prefix is None:
            return await self._post(http, item_id)
        headers = {"Idempotency-Key": f"{self.key_prefix}-{item_id}"}
        deadline = time.monotonic() + self.retry_seconds
        earlier: list[tuple[int | None, str]] = []
        while True:
            result = await self._post(http, item_id, headers)
            if result.status_code not in (None, 503) or time.monotonic() > deadline:
                result.earlier = earlier
                return result
            earlier.append((result.status_code, result.detail))
            await asyncio.sleep(0.5)

    @staticmethod
    async def _post(
        http: httpx.AsyncClient, item_id: int, headers: dict[str, str] | None = None
    ) -> Submission:
        at, started = time.time(), time.monotonic()
        try:
            response = await http.post(f"/process/{item_id}", headers=headers)
        except httpx.HTTPError as error:
            return Submission(
                item_id, None, None, time.monotonic() - started, at, type(error).__name__
            )
        seconds = time.monotonic() - started
        task_id = response.json().get("task_id") if response.status_code == 202 else None
        return Submission(
            item_id,
            response.status_code,
            task_id,
            seconds,
            at,
            response.text[:200],
            replayed=response.headers.get("idempotent-replayed") == "true",
        )


def accepted_ids(results: list[Submission]) -> set[uuid.UUID]:
    return {uuid.UUID(result.task_id) for result in results if result.task_id}


@dataclass
class JobCounts:
    jobs: int  # rows in the database (accepted, plus any recorded but answered 503)
    succeeded: int  # accepted jobs now succeeded
    lost: int  # accepted jobs not succeeded (or without a row)
    attempts: int  # sum of attempts over the accepted jobs
    last_finished_at: float | None  # wall clock (epoch) of the last accepted job's success
    lost_rows: list[tuple[str, str | None]] = field(default_factory=list)  # (status, error)


def count_jobs(dsn: str, accepted: set[uuid.UUID]) -> JobCounts:
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT id, status::text, attempts, extract(epoch FROM finished_at), error FROM jobs"
        ).fetchall()
    by_id = {row[0]: row for row in rows}
    done = [by_id[job_id] for job_id in accepted if job_id in by_id]
    succeeded = [row for row in done if row[1] == "succeeded"]
    return JobCounts(
        jobs=len(rows),
        succeeded=len(succeeded),
        lost=len(accepted) - len(succeeded),
        attempts=sum(row[2] for row in done),
        last_finished_at=max((float(row[3]) for row in succeeded), default=None),
        lost_rows=[(row[1], row[4]) for row in done if row[1] != "succeeded"][:10],
    )


def wait_for_jobs(
    dsn: str,
    accepted: set[uuid.UUID],
    seconds: float = SETTLE_SECONDS,
    on_poll: Callable[[], None] | None = None,
) -> JobCounts:
    """Counts once every accepted job succeeded, or when the deadline passes (then lost > 0).

    `on_poll` runs before each count (a restart policy watching the worker, say).
    """
    deadline = time.monotonic() + seconds
    while True:
        if on_poll is not None:
            on_poll()
        try:
            counts = count_jobs(dsn, accepted)
        except psycopg.OperationalError:
            counts = None
        if counts is not None and (counts.lost == 0 or time.monotonic() > deadline):
            return counts
        if counts is None and time.monotonic() > deadline:
            raise AssertionError("the database did not answer before the deadline")
        time.sleep(0.5)


def all_settled(dsn: str) -> bool:
    """Every row of the database finished (jobs answered 503 included, once the reaper ran)."""
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        unfinished = connection.execute(
            "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed')"
        ).fetchone()
    return unfinished is not None and unfinished[0] == 0


def report(scenario: str, **figures: Any) -> dict[str, Any]:
    """Print the scenario's figures and append them as one JSON line to artifacts/."""
    line = {
        "scenario": scenario,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        **figures,
    }
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with REPORT_PATH.open("a") as out:
        out.write(json.dumps(line) + "\n")
    print(f"\n[reliability] {json.dumps(line)}")
    return line


def batch_figures(results: list[Submission], counts: JobCounts, fault_at: float) -> dict[str, Any]:
    accepted = sum(1 for result in results if result.status_code == 202)
    recovery = (
        round(counts.last_finished_at - fault_at, 2)
        if counts.last_finished_at is not None and counts.lost == 0
        else None
    )
    return {
        "sent": len(results),
        "accepted": accepted,
        "succeeded": counts.succeeded,
        "duplicated_deliveries": counts.attempts - counts.succeeded if counts.lost == 0 else None,
        "lost": counts.lost,
        "recovery_seconds": recovery,
        **({"lost_rows": counts.lost_rows} if counts.lost_rows else {}),
    }


def log_count(log: str, needle: str) -> int:
    return log.count(needle)


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def rows_per_item(dsn: str) -> dict[int, int]:
    """How many job rows each item id has (a duplicate is a second row for one request)."""
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        rows = connection.execute("SELECT item_id, count(*) FROM jobs GROUP BY item_id").fetchall()
    return {int(item): int(count) for item, count in rows}


def last_started_after(dsn: str, since: float) -> float | None:
    """Seconds from `since` (epoch) to the last `started_at` of a job created before it."""
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        row = connection.execute(
            "SELECT extract(epoch FROM max(started_at)) FROM jobs"
            " WHERE created_at <= to_timestamp(%s)",
            (since,),
        ).fetchone()
    return None if row is None or row[0] is None else round(float(row[0]) - since, 2)


def pending_outbox_rows(dsn: str, created_before: float) -> int:
    """Outbox rows (messages not yet taken by the broker) created before a moment (epoch)."""
    try:
        with psycopg.connect(dsn, connect_timeout=5) as connection:
            row = connection.execute(
                "SELECT count(*) FROM outbox WHERE created_at < to_timestamp(%s)",
                (created_before,),
            ).fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else -1
