"""Flower's memory under a flood of task events (RELIABILITY.md, "Overload": Flower OOM-killed).

`python -m bench.flower_events` (root, cgroup v1, the machine's Redis on 127.0.0.1:6379):

1. starts Flower natively in a cgroup of its own with prod's limits for it (half a CPU, 256 MiB;
   infra/spec `FIXED_LIMITS`), against an empty Redis db, once as the stack runs it
   (`celery -A app.monitoring flower --max_tasks=<FLOWER_MAX_TASKS>`, the event backlog bounded)
   and once as stock Flower (`celery -A app.worker flower`: Flower's defaults);
2. publishes task events with Celery's own `EventDispatcher` from `PUBLISHERS` processes for
   `SECONDS` s, each task's three events as a worker sends them (received, started, succeeded,
   with the args and result a job carries), as fast as they go;
3. samples the cgroup's memory every 0.25 s (usage without inactive file cache) and reads its
   `oom_kill` count and Flower's exit; prints one JSON line per run and writes
   bench/results/flower-events.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.native_post import empty_redis_db
from bench.run import REPO, RESULTS, log
from infra.spec import FIXED_LIMITS, FLOWER_MAX_TASKS

SECONDS = float(os.environ.get("FLOWER_EVENTS_SECONDS", "45"))
PUBLISHERS = int(os.environ.get("FLOWER_EVENTS_PUBLISHERS", "3"))
# Prod's limits for Flower, as the program sets them.
_FLOWER_MEMORY_MB, _FLOWER_CPUS = FIXED_LIMITS["flower"].memory_mb, FIXED_LIMITS["flower"].cpus
CPU_PERIOD_US = 100_000
CPU_QUOTA_US = round(float(_FLOWER_CPUS) * CPU_PERIOD_US)
MEMORY_LIMIT = _FLOWER_MEMORY_MB * 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
REDIS_HOST_URL = "redis://127.0.0.1:6379"
PORT = 15966  # not a rehearsed or bench stack's Flower port (15955)


def _cgroup(name: str) -> tuple[Path, Path]:
    cpu, memory = CGROUP_ROOT / "cpu" / name, CGROUP_ROOT / "memory" / name
    for path in (cpu, memory):
        path.mkdir(exist_ok=True)
    (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
    (cpu / "cpu.cfs_quota_us").write_text(str(CPU_QUOTA_US))
    (memory / "memory.limit_in_bytes").write_text(str(MEMORY_LIMIT))
    return cpu, memory


def _memory(memory: Path) -> int:
    stat = dict(line.split() for line in (memory / "memory.stat").read_text().splitlines())
    return int((memory / "memory.usage_in_bytes").read_text()) - int(stat["total_inactive_file"])


def _oom_kills(memory: Path) -> int:
    for line in (memory / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _publish(broker_url: str, seconds: float, counter: Any) -> None:
    from celery import Celery

    app = Celery(broker=broker_url)
    sent = 0
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, hostname=f"bench-{os.getpid()}@host")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            task = str(uuid.uuid4())
            job = str(uuid.uuid4())
            dispatcher.send(
                "task-received",
                uuid=task,
                name="app.tasks.process_data",
                args=f"('{job}',)",
                kwargs="{}",
                retries=0,
                root_id=task,
                parent_id=None,
            )
            dispatcher.send("task-started", uuid=task)
            dispatcher.send(
                "task-succeeded",
                uuid=task,
                result="{'item_id': 7, 'status': 'processed'}",
                runtime=0.004,
            )
            sent += 3
    with counter.get_lock():
        counter.value += sent


def run(module: str, *flower_args: str) -> dict[str, Any]:
    db = empty_redis_db()
    broker_url = f"{REDIS_HOST_URL}/{db}"
    name = f"flower-events-{os.getpid()}"
    cpu, memory = _cgroup(name)
    env = os.environ | {
        "CELERY_BROKER_URL": broker_url,
        "REDIS_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url,
        "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    }
    env.pop("FLOWER_BASIC_AUTH", None)
    # The child joins the cgroups before it execs Flower, so everything it runs is counted.
    join = f'echo $$ > {cpu}/tasks; echo $$ > {memory}/tasks; exec "$@"'
    flower = subprocess.Popen(
        [
            *("sh", "-c", join, "sh", sys.executable, "-m", "celery", "-A", module, "flower"),
            *(f"--port={PORT}", "--address=127.0.0.1", *flower_args),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/healthcheck", timeout=2)
                break
            except httpx.TransportError:
                if flower.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Flower did not start") from None
                time.sleep(0.3)
        time.sleep(2)
        baseline = _memory(memory)
        counter = multiprocessing.Value("q", 0)
        publishers = [
            multiprocessing.Process(target=_publish, args=(broker_url, SECONDS, counter))
            for _ in range(PUBLISHERS)
        ]
        for process in publishers:
            process.start()
        peak = baseline
        while any(process.is_alive() for process in publishers):
            peak = max(peak, _memory(memory))
            time.sleep(0.25)
        for process in publishers:
            process.join()
        quiet_until = time.monotonic() + 20
        while time.monotonic() < quiet_until and flower.poll() is None:
            peak = max(peak, _memory(memory))
            time.sleep(0.25)
        answering = flower.poll() is None
        if answering:
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/healthcheck", timeout=5)
            except httpx.TransportError:
                answering = False
        result = {
            "flower": " ".join((module, *flower_args)),
            "events_sent": counter.value,
            "seconds": SECONDS,
            "events_per_second": round(counter.value / SECONDS),
            "memory_mib": {
                "baseline": round(baseline / 2**20, 1),
                "peak": round(peak / 2**20, 1),
                "after_20s_quiet": round(_memory(memory) / 2**20, 1) if answering else None,
                "limit": MEMORY_LIMIT // 2**20,
            },
            "oom_kills": _oom_kills(memory),
            "flower_alive_and_answering": answering,
        }
    finally:
        flower.terminate()
        try:
            _, stderr = flower.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            flower.kill()
            _, stderr = flower.communicate()
        redis.Redis.from_url(broker_url).flushdb()
        time.sleep(1)
        for path in (cpu, memory):
            path.rmdir()
    dropped = [line for line in stderr.decode().splitlines() if "task events dropped" in line]
    result["dropped_reports"] = len(dropped)
    result["last_dropped_report"] = dropped[-1][-200:] if dropped else None
    return result


def main() -> None:
    results = []
    shipped = ("app.monitoring", f"--max_tasks={FLOWER_MAX_TASKS}")
    for command in (shipped, ("app.worker",)):
        log(f"flower events: {' '.join(command)}, {PUBLISHERS} publishers for {SECONDS:.0f} s")
        result = run(*command)
        print(json.dumps(result), flush=True)
        results.append(result)
    RESULTS.mkdir(exist_ok=True)
    record = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "runs": results}
    (RESULTS / "flower-events.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
