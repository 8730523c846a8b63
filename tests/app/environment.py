"""The run's own environment, set at import, before `app` reads its settings (the conftest imports
this first): a fresh database name, an empty Redis db number, a scratch directory. With the few
helpers the tests share around them (the admin connection, stopping a subprocess)."""

import os
import random
import secrets
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST_URL = "redis://127.0.0.1:6379"
CLAIM_KEY = "taskstack:test-run"


def claim_empty_redis_db() -> int:
    """An empty Redis db number, claimed with a marker key so a parallel run picks another."""
    for number in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{REDIS_HOST_URL}/{number}")
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=3600):
                return number
        finally:
            client.close()
    raise RuntimeError("no empty Redis db among 1-15 on 127.0.0.1:6379")


RUN_DIR = Path(tempfile.mkdtemp(prefix="taskstack-tests-"))
DATABASE_NAME = f"taskstack_test_{secrets.token_hex(6)}"
REDIS_DB = claim_empty_redis_db()
TEST_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE_NAME}",
    "REDIS_URL": f"{REDIS_HOST_URL}/{REDIS_DB}",
    "CELERY_BROKER_URL": f"{REDIS_HOST_URL}/{REDIS_DB}",
    "CELERY_RESULT_BACKEND": f"{REDIS_HOST_URL}/{REDIS_DB}",
    "JOB_WORK_SECONDS": "0.1",
    "JOB_MAX_RETRIES": "2",
    "JOB_RETRY_BACKOFF_SECONDS": "1",
    "JOB_RETRY_BACKOFF_MAX_SECONDS": "2",
    "REAPER_STALE_AFTER_SECONDS": "30",
    "BEAT_SCHEDULE_PATH": str(RUN_DIR / "beat-schedule"),
    "WORKER_HEARTBEAT_PATH": str(RUN_DIR / "worker-heartbeat"),
    "WORKER_HEARTBEAT_SECONDS": "1",
    "READINESS_TIMEOUT_SECONDS": "2",
    # Off for every worker a test starts, but the session's (`WORKER_METRICS_ENV`).
    "METRICS_PORT": "0",
}
os.environ.update(TEST_ENV)
WORKER_LOG = RUN_DIR / "worker.log"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# The session worker's metrics: multiprocess mode in a directory that does not exist yet (the
# app creates it), on a free port.
WORKER_METRICS_PORT = free_port()
WORKER_METRICS_ENV = {
    "PROMETHEUS_MULTIPROC_DIR": str(RUN_DIR / "worker-metrics" / "multiproc"),
    "METRICS_PORT": str(WORKER_METRICS_PORT),
}


def admin_execute(statement: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(statement.encode())


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
