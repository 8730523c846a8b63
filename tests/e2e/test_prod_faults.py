"""Faults on the rehearsed prod stack, as an operator breaks it, with the SHIPPED recovery defaults
(RELIABILITY.md, "the rehearsed prod stack"): 1,000 POSTs from 16 clients, the fault injected
3 s in, every job counted from PostgreSQL. Asserted: nothing accepted is lost, nothing is refused
while PostgreSQL is up, no request creates two jobs. Recovery times are measured and reported,
never asserted (a shared machine)."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from deploy.stack import DeployedStack, eventually
from tests.faults.measure import report

RUNNING = "status = 'started'"
UNFINISHED = "status NOT IN ('succeeded', 'failed')"
SENT = 1000
CLIENTS = 16
FAULT_AFTER_SECONDS = 3.0
# Generous bounds for what must happen (not performance figures): 1,000 jobs of 0.5 s on 12 task
# slots take about 45 s once the fault is over.
SETTLE_SECONDS = 300
RETRY_SECONDS = 120


@dataclass
class Answer:
    item_id: int
    status: int | None  # None: no answer (connection refused or dropped)
    task_id: str | None
    detail: str
    earlier: list[str] = field(default_factory=list)  # failed tries before, for a retrying client
    replayed: bool = False
    # 503s (this answer's and the failed tries') without Retry-After: a 503 always says when.
    bare_503s: int = 0


def _post(base_url: str, item_id: int, key: str | None, auth: dict[str, str]) -> Answer:
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    deadline = time.monotonic() + RETRY_SECONDS
    earlier: list[str] = []
    bare_503s = 0
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while True:
            try:
                response = client.post(f"/process/{item_id}", headers=headers)
            except httpx.HTTPError as error:
                answer = Answer(item_id, None, None, type(error).__name__)
            else:
                task_id = response.json().get("task_id") if response.status_code == 202 else None
                answer = Answer(
                    item_id,
                    response.status_code,
                    task_id,
                    response.text[:120],
                    replayed=response.headers.get("idempotent-replayed") == "true",
                )
                if response.status_code == 503 and "retry-after" not in response.headers:
                    bare_503s += 1
            if key is None or answer.status not in (None, 503) or time.monotonic() > deadline:
                answer.earlier = earlier
                answer.bare_503s = bare_503s
                return answer
            earlier.append(f"{answer.status}: {answer.detail}")
            time.sleep(0.5)


def _scalar(stack: DeployedStack, sql: str) -> str:
    return stack.psql(sql).strip()


def _run(
    stack: DeployedStack,
    scenario: str,
    first_item: int,
    inject: Callable[[], dict[str, Any]],
    *,
    keyed: bool = False,
) -> dict[str, Any]:
    prefix = secrets.token_hex(4)
    items = range(first_item, first_item + SENT)
    answers: list[Answer] = []
    lock = threading.Lock()

    def send(item_id: int) -> None:
        answer = _post(
            stack.api_url, item_id, f"{prefix}-{item_id}" if keyed else None, stack.headers
        )
        with lock:
            answers.append(answer)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        started = time.time()
        futures = [pool.submit(send, item) for item in items]
        time.sleep(max(0.0, FAULT_AFTER_SECONDS - (time.time() - started)))
        fault_at = time.time()
        in_flight = _scalar(
            stack, "SELECT string_agg(id::text, ',') FROM jobs WHERE status = 'started'"
        )
        fault = inject()
        for future in futures:
            future.result()

    accepted = {a.task_id for a in answers if a.task_id}
    where = f"item_id BETWEEN {items.start} AND {items.stop - 1}"

    def settled() -> bool:
        unfinished = _scalar(
            stack,
            f"SELECT count(*) FROM jobs WHERE {where} AND status NOT IN ('succeeded', 'failed')",  # noqa: S608
        )
        return unfinished == "0"

    eventually(settled, within=SETTLE_SECONDS, every=1)
    succeeded, rows, items_recorded, attempts, last = _scalar(
        stack,
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*),"  # noqa: S608
        " count(DISTINCT item_id), coalesce(sum(attempts), 0),"
        f" extract(epoch FROM max(finished_at)) FROM jobs WHERE {where}",
    ).split("|")
    stranded = [job for job in in_flight.split(",") if job]
    stranded_done = (
        _scalar(
            stack,
            "SELECT extract(epoch FROM max(finished_at)) FROM jobs WHERE id IN ("  # noqa: S608
            + ",".join(f"'{uuid.UUID(job)}'" for job in stranded)
            + ")",
        )
        if stranded
        else ""
    )
    refused = Counter(
        f"{a.status}: {a.detail.split(':')[0][:60]}" for a in answers if a.status != 202
    )
    figures = report(
        f"prod stack: {scenario}",
        sent=SENT,
        accepted=sum(1 for a in answers if a.status == 202),
        refused=sum(refused.values()),
        refused_why=dict(refused),
        retried=sum(1 for a in answers if a.earlier),
        failures_before_success=Counter(e.split(":")[0] for a in answers for e in a.earlier),
        answered_as_replay=sum(1 for a in answers if a.replayed),
        answered_503_without_retry_after=sum(a.bare_503s for a in answers),
        succeeded=int(succeeded),
        lost=len(accepted) - int(succeeded),
        rows=int(rows),
        duplicated_jobs=int(rows) - int(items_recorded),
        executions_beyond_one_per_job=int(attempts) - int(rows),
        recovery_seconds=round(float(last) - fault_at, 1) if last else None,
        jobs_running_at_fault=len(stranded),
        those_finished_after_seconds=round(float(stranded_done) - fault_at, 1)
        if stranded_done
        else None,
        **fault,
    )
    assert figures["lost"] == 0, figures
    assert figures["duplicated_jobs"] == 0, figures
    assert figures["answered_503_without_retry_after"] == 0, figures
    return figures


def _running(stack: DeployedStack, name: str) -> bool:
    return bool(stack.container(name).attrs["State"]["Running"])


def _start_if_stopped(stack: DeployedStack, names: list[str]) -> list[str]:
    """Start what the restart policy did not; the names started here."""
    started = []
    for name in names:
        container = stack.container(name)
        container.reload()
        if container.status != "running":
            container.start()
            started.append(name)
    return started


def test_docker_kill_of_a_worker(prod_stack: DeployedStack) -> None:
    victim = prod_stack.names("worker")[0]

    def inject() -> dict[str, Any]:
        prod_stack.container(victim).kill()
        time.sleep(2)
        return {"started_by_hand": _start_if_stopped(prod_stack, [victim])}

    figures = _run(prod_stack, "docker kill of one worker (3 x 4)", 100_000, inject)
    assert figures["refused"] == 0, figures


def test_docker_restart_of_postgresql(prod_stack: DeployedStack) -> None:
    (postgres,) = prod_stack.names("postgres")

    def inject() -> dict[str, Any]:
        began = time.monotonic()
        prod_stack.container(postgres).restart(timeout=10)
        return {"restart_seconds": round(time.monotonic() - began, 1)}

    figures = _run(prod_stack, "docker restart of PostgreSQL", 200_000, inject)
    # Only while PostgreSQL was away, and only as "nothing recorded, retry": 503 + Retry-After.
    assert all(why.startswith("503") for why in figures["refused_why"]), figures


def test_docker_restart_of_redis(prod_stack: DeployedStack) -> None:
    (redis,) = prod_stack.names("redis")

    def inject() -> dict[str, Any]:
        began = time.monotonic()
        prod_stack.container(redis).restart(timeout=10)
        return {"restart_seconds": round(time.monotonic() - began, 1)}

    figures = _run(prod_stack, "docker restart of Redis", 300_000, inject)
    assert figures["refused"] == 0, figures


def test_docker_kill_of_redis_started_5_s_later(prod_stack: DeployedStack) -> None:
    (redis,) = prod_stack.names("redis")

    def inject() -> dict[str, Any]:
        prod_stack.container(redis).kill()
        time.sleep(5)
        return {"started_by_hand": _start_if_stopped(prod_stack, [redis])}

    figures = _run(prod_stack, "docker kill of Redis, started 5 s later", 400_000, inject)
    assert figures["refused"] == 0, figures


def test_every_app_container_killed_and_brought_back(prod_stack: DeployedStack) -> None:
    apps = [name for role in ("api", "worker", "beat", "flower") for name in prod_stack.names(role)]

    def inject() -> dict[str, Any]:
        for name in apps:
            prod_stack.container(name).kill()
        time.sleep(2)
        started = _start_if_stopped(prod_stack, apps)
        eventually(lambda: all(_running(prod_stack, n) for n in apps), within=120)
        return {"killed": len(apps), "started_by_hand": len(started)}

    # The clients retry with an Idempotency-Key: those whose connection dropped learn their task.
    _run(
        prod_stack,
        "every app container killed, brought back (clients retry with a key)",
        500_000,
        inject,
        keyed=True,
    )
