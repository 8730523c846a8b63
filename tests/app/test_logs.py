"""Logs as the roles write them: the API (`uvicorn --workers 2`), the worker, beat and the migration
run as subprocesses with passwords in every URL and in FLOWER_BASIC_AUTH; a request, a job, a
notification that tries to forge a line, a job that fails with a traceback, and a worker whose
broker is unreachable. No line may hold a secret; in `json` every line is a JSON object of the
schema (docs/observability.md, "Logs"), and the ids of the request and the job are on its lines."""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from app.intake.broker import task_envelope
from app.storage.jobs import PROCESS_DATA
from app.worker.tasks import process_data
from tests.app.environment import (
    DATABASE_NAME,
    REDIS_HOST_URL,
    REPO_ROOT,
    RUN_DIR,
    claim_empty_redis_db,
    stop_process,
)
from tests.app.helpers import wait_for_health

PG_SECRET = f"pgpass-{secrets.token_hex(8)}"
REDIS_SECRET = f"redispass-{secrets.token_hex(8)}"
FLOWER_SECRET = f"flowerpass-{secrets.token_hex(8)}"
SECRETS = (PG_SECRET, REDIS_SECRET, FLOWER_SECRET)
SCHEMA = ("time", "level", "role", "logger", "message")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
TRACE_ID = secrets.token_hex(16)
PARENT_SPAN_ID = secrets.token_hex(8)
REQUEST_ID = f"req-{secrets.token_hex(6)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    log_format: str
    env: dict[str, str]
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]]
    api: str
    broker_url: str

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> None:
        self.logs[name] = RUN_DIR / f"logs-{self.log_format}-{name}.log"
        with self.logs[name].open("wb") as log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def text(self, name: str) -> str:
        return self.logs[name].read_text()

    def wait_for(self, name: str, needle: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while needle not in self.text(name):
            assert self.processes[name].poll() is None, self.text(name)[-3000:]
            assert time.monotonic() < deadline, f"{needle!r} not in {name}'s log"
            time.sleep(0.1)


@pytest.fixture(scope="module", params=["json", "text"])
def stack(request: pytest.FixtureRequest, database: str) -> Iterator[Stack]:
    log_format = request.param
    redis_db = claim_empty_redis_db()  # its own: the session's worker must not take these jobs
    broker_url = f"redis://default:{REDIS_SECRET}@127.0.0.1:6379/{redis_db}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql+psycopg://postgres:{PG_SECRET}@127.0.0.1:5432/{DATABASE_NAME}",
        "ADMIN_DATABASE_URL": "",
        "REDIS_URL": broker_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url,
        "FLOWER_BASIC_AUTH": f"admin:{FLOWER_SECRET}",
        "LOG_FORMAT": log_format,
        "WORKER_HEARTBEAT_PATH": str(RUN_DIR / f"logs-{log_format}-heartbeat"),
        "BEAT_SCHEDULE_PATH": str(RUN_DIR / f"logs-{log_format}-beat-schedule"),
        "REAPER_INTERVAL_SECONDS": "1",
        "JOB_WORK_SECONDS": "0",
    }
    port = free_port()
    stack = Stack(log_format, env, {}, {}, f"http://127.0.0.1:{port}", broker_url)
    celery = (sys.executable, "-m", "celery", "-A", "app.worker")
    stack.start("worker", *celery, "worker", "--loglevel=INFO", "--concurrency=2")
    stack.start("beat", *celery, "beat", "--loglevel=INFO")
    stack.start(
        "api",
        *(sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--workers", "2"),
        # The supervisor of --workers never imports the app: uvicorn's log config gives it ours.
        env={**env, "UVICORN_LOG_CONFIG": "app/uvicorn_logging.json"},
    )
    # The migration (the schema is at head already; trust authentication takes any password).
    stack.start("migrate", sys.executable, "-m", "alembic", "upgrade", "head")
    try:
        yield stack
    finally:
        for process in stack.processes.values():
            stop_process(process)
        client = redis.Redis.from_url(f"{REDIS_HOST_URL}/{redis_db}")
        client.flushdb()
        client.close()


def wait_ready(stack: Stack, http: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if http.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert stack.processes["api"].poll() is None, stack.text("api")[-3000:]
        assert time.monotonic() < deadline, stack.text("api")[-3000:]
        time.sleep(0.2)
    stack.wait_for("worker", "ready.", 60)


def wait_status(http: httpx.Client, task_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while (current := http.get(f"/task/{task_id}").json()["status"]) != status:
        assert time.monotonic() < deadline, current
        time.sleep(0.1)


def records(stack: Stack, name: str) -> list[dict[str, Any]]:
    lines = [line for line in stack.text(name).splitlines() if line.strip()]
    if stack.log_format != "json":
        return [{"message": line} for line in lines]
    parsed = []
    for line in lines:
        record = json.loads(line)  # every line: a JSON object
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def test_no_secret_in_any_line_and_json_lines_of_one_schema(stack: Stack) -> None:
    http = httpx.Client(base_url=stack.api, timeout=10)
    wait_ready(stack, http)
    # A request with its own request id and trace context; one whose request id is not sane.
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    response = http.post(
        "/process/7", headers={"X-Request-ID": REQUEST_ID, "traceparent": traceparent}
    )
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == REQUEST_ID
    job_id = response.json()["task_id"]
    wait_status(http, job_id, "SUCCESS")
    bad = http.post("/process/8", headers={"X-Request-ID": "not sane <b>" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", http.get("/health").headers["X-Request-ID"])

    # A notification that tries to forge a worker's line.
    marker = uuid.uuid4().hex
    forged = f"[2026-01-01 00:00:00,000: ERROR/MainProcess] forged {marker}"
    message = f'hello\n{forged}\r\n{"{"}"level": "ERROR", "m": "{marker}"{"}"}\u2028{forged}'
    assert http.post("/notifications", json={"user_id": 7, "message": message}).status_code == 202
    stack.wait_for("worker", "notification for user 7: hello")

    # A job that fails (retries exhausted): its traceback is logged.
    failing = uuid.uuid4()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DATABASE_NAME}") as connection:
        connection.execute(
            "INSERT INTO jobs (id, item_id, kind, status, celery_task_id, payload)"
            " VALUES (%s, 9, %s, 'queued', %s, '{\"fail_times\": 10}')",
            (failing, PROCESS_DATA, str(failing)),
        )
    client = redis.Redis.from_url(stack.broker_url)
    client.lpush("celery", task_envelope(process_data.name, str(failing), [str(failing)], "celery"))
    client.close()
    wait_status(http, str(failing), "FAILURE")

    # A worker whose broker is unreachable, its URL with the password.
    unreachable = f"redis://default:{REDIS_SECRET}@127.0.0.1:{free_port()}/0"
    stack.start(
        "lost",
        *(sys.executable, "-m", "celery", "-A", "app.worker", "worker", "--loglevel=INFO"),
        env={**stack.env, "CELERY_BROKER_URL": unreachable, "CELERY_RESULT_BACKEND": unreachable},
    )
    stack.wait_for("lost", "Cannot connect to", 30)
    stack.wait_for("beat", "Sending due task", 30)
    assert stack.processes["migrate"].wait(60) == 0, stack.text("migrate")
    http.close()
    for name in ("api", "worker", "beat", "lost"):
        stop_process(stack.processes[name])

    for name, path in stack.logs.items():
        raw = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in raw, f"{name}'s log holds a secret"
        assert raw.strip(), f"{name} logged nothing"

    api, worker = records(stack, "api"), records(stack, "worker")
    # The forged text stays in its record: no line starts like Celery's text format.
    assert not [r for r in worker if r["message"].startswith("[2026-01-01") and marker in str(r)]
    assert not [r for r in worker if r.get("m") == marker]
    if stack.log_format == "json":
        expected_roles = {"api": "api", "worker": "worker", "lost": "worker", "beat": "beat"}
        expected_roles["migrate"] = "migrate"
        for name, role in expected_roles.items():
            for record in records(stack, name):
                assert set(SCHEMA) <= record.keys(), record
                assert RFC3339_UTC.fullmatch(record["time"]), record
                assert record["role"] == role, record
                assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        # uvicorn's own lines (both --workers children) and the access line of the request.
        assert {r["logger"] for r in api} >= {"uvicorn.error", "uvicorn.access"}
        access = [
            r for r in api if r["logger"] == "uvicorn.access" and "/process/7" in r["message"]
        ]
        assert access
        assert access[0]["request_id"] == REQUEST_ID
        assert access[0]["trace_id"] == TRACE_ID
        # The job's lines on the worker carry its id and the request's trace id.
        job_lines = [r for r in worker if r.get("job_id") == job_id]
        assert job_lines
        assert all(r["trace_id"] == TRACE_ID for r in job_lines), job_lines
        # (Other tests' rows in the shared database may reach this stack's relay and worker.)
        (notification,) = [r for r in worker if marker in r["message"]]
        assert notification["message"] == f"notification for user 7: {message}"
        assert notification["job_id"]
        failed = [r for r in worker if r.get("job_id") == str(failing) and "exc_info" in r]
        assert failed
        assert "TransientJobError" in failed[-1]["exc_info"]
        assert "Traceback" in failed[-1]["exc_info"]
    else:
        text = stack.text("worker")
        assert f"job_id={job_id} trace_id={TRACE_ID}" in text
        assert "Traceback" in text
        escaped = "hello\\n" + forged
        assert escaped in text
    # Where each role connects is logged, its passwords masked.
    assert "redis://default:***@127.0.0.1" in stack.text("api")
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:5432/{DATABASE_NAME}" in stack.text(
        "worker"
    )


def test_without_the_access_log_a_request_leaves_no_line(tmp_path: Path) -> None:
    """The API as the program runs it with `apiAccessLog` off (`--no-access-log` and our log
    config): uvicorn's own lines arrive, no line per request."""
    port = free_port()
    log = tmp_path / "api.log"
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    command += ["--workers", "2", "--no-access-log", "--log-config", "app/uvicorn_logging.json"]
    with log.open("wb") as output:
        api = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=os.environ | {"LOG_FORMAT": "json"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", api, log)
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/jobs").status_code == 200
    finally:
        stop_process(api)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [r for r in records if r["logger"] == "uvicorn.error"], records
    assert not [r for r in records if r["logger"] == "uvicorn.access"]
    assert "/jobs" not in log.read_text()
