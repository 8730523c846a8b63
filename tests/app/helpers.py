"""Small helpers shared by the app tests."""

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import text

from app.storage import jobs
from app.storage.db import get_async_sessionmaker, get_sync_engine

# Generous: a prefork worker on a loaded CI machine, plus retry countdowns of a few seconds.
SETTLE_SECONDS = 60


async def wait_for_task(
    client: httpx.AsyncClient, task_id: str, states: set[str], seconds: float = SETTLE_SECONDS
) -> dict[str, Any]:
    """Poll GET /task/{task_id} until its status is one of `states`; returns the body."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(f"/task/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in states:
            return body
        assert time.monotonic() < deadline, f"task {task_id} still {body} after {seconds} s"
        await anyio.sleep(0.1)


async def wait_for_log_line(log: Path, line: str, seconds: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while line not in await anyio.Path(log).read_text():
        assert time.monotonic() < deadline, f"{line!r} not in {log} after {seconds} s"
        await anyio.sleep(0.1)


def wait_for_log_line_sync(log: Path, line: str, seconds: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while line not in log.read_text():
        assert time.monotonic() < deadline, f"{line!r} not in {log} after {seconds} s"
        time.sleep(0.1)


def wait_for_health(
    base_url: str, process: "subprocess.Popen[bytes]", log: Path, seconds: float = SETTLE_SECONDS
) -> None:
    """Until the API process at `base_url` answers /health; its log in the failure if it exits or
    does not answer in time."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base_url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


async def create_queued_job(item_id: int, payload: dict[str, Any] | None = None) -> uuid.UUID:
    """A committed job row that no message names yet."""
    async with get_async_sessionmaker()() as session:
        job = await jobs.create_job(session, item_id, payload)
    return job.id


def execute(statement: str, **parameters: Any) -> None:
    with get_sync_engine().begin() as connection:
        connection.execute(text(statement), parameters)


def job_row(job_id: uuid.UUID) -> dict[str, Any] | None:
    with get_sync_engine().connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id})
            .mappings()
            .one_or_none()
        )
    return dict(row) if row is not None else None
