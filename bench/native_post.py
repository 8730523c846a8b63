"""POST /process throughput natively, for an A/B of two versions of the code in one sitting.

Runs one `uvicorn app.main:app` (no access log) and one prefork worker, 2 children
(`JOB_WORK_SECONDS=0`, draining meanwhile, `--loglevel=WARNING`) from the code under `--code`
(default: this checkout) against the machine's PostgreSQL and Redis (a database and an empty
Redis db of their own, removed at the end), then `wrk -t2 -c32 -d10s -s bench/post.lua`, the
method of `make bench`. Prints one JSON line per run. Never part of the tests.

    uv run python -m bench.native_post                       # this checkout
    git archive main | tar -x -C /tmp/base && \
        uv run python -m bench.native_post --code /tmp/base  # another version, same environment
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import redis

HERE = Path(__file__).resolve().parent
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def empty_redis_db() -> int:
    """An empty db of the machine's Redis, claimed with a marker key for 10 minutes."""
    for number in range(15, 0, -1):
        client = redis.Redis(db=number)
        try:
            if client.dbsize() == 0 and client.set("taskstack:bench", 1, nx=True, ex=600):
                return number
        finally:
            client.close()
    raise SystemExit("no empty Redis db on 127.0.0.1:6379")


def run(code: Path, seconds: int, port: int) -> dict[str, object]:
    database = f"bench_native_{secrets.token_hex(4)}"
    redis_db = empty_redis_db()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-native-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "JOB_WORK_SECONDS": "0",
        "WORKER_HEARTBEAT_PATH": str(run_dir / "heartbeat"),
        "BEAT_SCHEDULE_PATH": str(run_dir / "beat"),
        "PYTHONPATH": str(code),
    }
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"'.encode())
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=code,
            env=env,
            check=True,
            capture_output=True,
        )
        with (run_dir / "api.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)),
                        *("--no-access-log", "--log-level", "warning"),
                    ],
                    cwd=code,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        with (run_dir / "worker.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "celery", "-A", "app.worker", "worker"),
                        *("--loglevel=WARNING", "--concurrency=2"),
                    ],
                    cwd=code,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit((run_dir / "api.log").read_text()[-3000:])
            time.sleep(0.3)
        while not (run_dir / "heartbeat").exists():
            time.sleep(0.3)
        httpx.post(f"{url}/process/1", timeout=10).raise_for_status()  # warm the pools
        report = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(HERE / "post.lua"), url],
            env={**env, "BENCH_LUA_DIR": str(HERE)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rate = re.search(r"Requests/sec:\s+([\d.]+)", report)
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
        return {
            "code": str(code),
            "post_requests_per_second": float(rate.group(1)) if rate else None,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "load_average": os.getloadavg()[0],
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())
        redis.Redis(db=redis_db).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=HERE.parent)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=18765)
    arguments = parser.parse_args()
    print(json.dumps(run(arguments.code.resolve(), arguments.seconds, arguments.port)))


if __name__ == "__main__":
    main()
