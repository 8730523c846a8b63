"""What the app's own instrumentation costs the hot path: the API of two checkouts, A/B.

`python -m bench.app_ab OLD_CHECKOUT [--rounds 3]` runs one uvicorn process of each checkout in
turn (this one and OLD_CHECKOUT, each with its own virtualenv: `uv sync` there first) on this
machine, against the machine's PostgreSQL and Redis (a fresh database and an empty Redis db per
round, removed after), and measures POST /process and GET /task/{id} of a finished job with the
benchmark's wrk load, alternating the two so that the machine's drift hits both alike. No
container, no proxy: the difference is the code's. Prints one JSON line and writes it to
bench/results/app-ab-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench.run import POST_LUA, RESULTS, WRK, machine, wrk_with

HERE = Path(__file__).resolve().parents[1]
PORT = 18777
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _redis_db() -> int:
    for number in range(15, 0, -1):
        client = redis.Redis(db=number)
        if client.dbsize() == 0 and client.set("taskstack:bench-ab", "1", nx=True, ex=3600):
            return number
    raise SystemExit("no empty Redis db on 127.0.0.1:6379")


def _serve(checkout: Path, database: str, db: int) -> subprocess.Popen[bytes]:
    url = f"redis://127.0.0.1:6379/{db}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": url,
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    venv = checkout / ".venv" / "bin"
    subprocess.run(
        [venv / "alembic", "upgrade", "head"],
        cwd=checkout,
        env=env,
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            venv / "uvicorn",
            "app.main:app",
            "--port",
            str(PORT),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"{checkout}: the API did not answer")


def _finished_task(database: str) -> str:
    task_id = httpx.post(f"http://127.0.0.1:{PORT}/process/1").json()["task_id"]
    with psycopg.connect(
        f"postgresql://postgres@127.0.0.1:5432/{database}", autocommit=True
    ) as connection:
        connection.execute(
            "UPDATE jobs SET status = 'succeeded', started_at = now(), finished_at = now(), "
            "result = '{\"item_id\": 1}' WHERE id = %s",
            (task_id,),
        )
    return str(task_id)


def measure(checkout: Path) -> dict[str, float]:
    database = f"taskstack_ab_{secrets.token_hex(4)}"
    db = _redis_db()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}".encode())
    server = _serve(checkout, database, db)
    try:
        url = f"http://127.0.0.1:{PORT}"
        post = wrk_with(WRK, "-s", str(POST_LUA), url)["requests_per_second"]
        task = _finished_task(database)
        get = wrk_with(WRK, f"{url}/task/{task}")["requests_per_second"]
        return {"post": post, "get": get}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        redis.Redis(db=db).flushdb()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {database} WITH (FORCE)".encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name, checkout in (("old", args.old.resolve()), ("new", HERE)):
            runs[name].append(measure(checkout))
    median = {
        name: {key: statistics.median(r[key] for r in results) for key in ("post", "get")}
        for name, results in runs.items()
    }
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python -m bench.app_ab {args.old} --rounds {args.rounds}",
        "machine": machine(),
        "old": str(
            subprocess.run(
                ["git", "-C", str(args.old), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        ),
        "new": str(
            subprocess.run(
                ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        ),
        "runs": runs,
        "median": median,
        "new_over_old": {k: round(median["new"][k] / median["old"][k], 3) for k in ("post", "get")},
    }
    line = json.dumps(result)
    print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"app-ab-{datetime.now(UTC).strftime('%Y-%m-%d-%H%M')}.json").write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
