"""`make bench`: how fast the dev stack accepts and finishes work (docs/bench.md).

Brings the dev stack up through the rehearsal harness (`python -m rehearsal up --stack dev`,
its own stack name and host ports, JOB_WORK_SECONDS=0), measures, writes `bench/results/bench.json`
and `bench/results/bench.png`, prints a markdown table, and tears the stack down (volumes too).

1. POST /process/{id}: wrk, 32 connections, 10 s; rows counted in PostgreSQL before and after.
2. GET /task/{id}: wrk, 32 connections, 10 s, over 1,000 existing job ids.
3. Drain: with the worker containers stopped and the jobs table emptied, 5,000 jobs are enqueued
   through the API; then the workers start and the drain runs alone: first `started_at` to last
   `finished_at` (database clock), for 1, 2 and 4 worker processes (one container,
   `workerConcurrency` N).
4. Enqueue -> succeeded: 20 POSTs a second for 20 s while the workers are idle;
   `finished_at - created_at` of each job, p50/p99.
5. Ceilings on the same machine: `redis-benchmark -t lpush,rpop` against the stack's Redis and
   `pgbench` single-row INSERTs (one per transaction, like POST /process) against its PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
RESULTS = BENCH_DIR / "results"
STACK_NAME = "bench-dev"
LABEL_STACK = "com.taskstack.stack"
LABEL_ROLE = "com.taskstack.role"
# Host ports clear of the machine's services, a real dev stack and the e2e rehearsal's stack.
PORTS = {"apiPort": 18300, "flowerPort": 15855, "postgresHostPort": 25732, "redisHostPort": 26679}
APP_ENV = ["JOB_WORK_SECONDS=0"]
DRAIN_JOBS = 5000
WORKER_PROCESSES = (1, 2, 4)
CONNECTIONS = 32
SECONDS = 10
STEADY_RATE = 20
STEADY_SECONDS = 20


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(command: list[str], **kwargs: Any) -> str:
    completed = subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)
    return str(completed.stdout)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Stack:
    """The rehearsed dev stack the benchmark runs against."""

    client: docker.DockerClient = field(default_factory=docker.from_env)
    api_url: str = f"http://127.0.0.1:{PORTS['apiPort']}"

    def up(self, worker_processes: int) -> None:
        log(f"rehearsal up ({STACK_NAME}, 1 worker container x {worker_processes} processes)")
        config = [
            *(f"{key}={value}" for key, value in PORTS.items()),
            "workerReplicas=1",
            f"workerConcurrency={worker_processes}",
            f"appEnv={json.dumps(APP_ENV)}",
        ]
        command = [sys.executable, "-m", "rehearsal", "up", "--stack", "dev"]
        command += ["--name", STACK_NAME, *(arg for c in config for arg in ("--config", c))]
        subprocess.run(command, check=True, cwd=REPO)
        self.wait_ready()

    def down(self) -> None:
        log(f"rehearsal down ({STACK_NAME}, volumes too)")
        command = [sys.executable, "-m", "rehearsal", "down", "--name", STACK_NAME]
        subprocess.run([*command, "--stack", "dev", "--volumes"], check=False, cwd=REPO)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.api_url}/health/ready did not answer 200")

    def containers(self, role: str) -> list[Any]:
        labels = [f"{LABEL_STACK}={STACK_NAME}", f"{LABEL_ROLE}={role}"]
        return list(self.client.containers.list(all=True, filters={"label": labels}))

    def sql(self, statement: str) -> str:
        """Run SQL in the stack's PostgreSQL container (local socket, no credentials here)."""
        (postgres,) = self.containers("postgres")
        command = ["psql", "-U", "taskstack", "-d", "taskstack", "-AtX", "-v", "ON_ERROR_STOP=1"]
        result = postgres.exec_run([*command, "-c", statement])
        if result.exit_code != 0:
            raise RuntimeError(f"psql failed: {result.output.decode()}")
        return str(result.output.decode()).strip()

    def count_jobs(self) -> int:
        return int(self.sql("SELECT count(*) FROM jobs"))


def wrk(url: str, script: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-s", str(BENCH_DIR / script)]
    environment = {**os.environ, "BENCH_LUA_DIR": str(BENCH_DIR), **(env or {})}
    output = run([*command, url], env=environment)
    line = next(line for line in output.splitlines() if line.startswith("BENCH-JSON "))
    summary: dict[str, Any] = json.loads(line.removeprefix("BENCH-JSON "))
    seconds = summary["duration_us"] / 1e6
    return {
        "connections": CONNECTIONS,
        "seconds": round(seconds, 2),
        "requests": summary["requests"],
        "requests_per_second": round(summary["requests"] / seconds, 1),
        "p50_ms": summary["p50_us"] / 1000,
        "p90_ms": summary["p90_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "max_ms": summary["max_us"] / 1000,
        "non_2xx": summary["non_2xx"],
        "socket_errors": summary["socket_errors"],
    }


def bench_post(stack: Stack) -> dict[str, Any]:
    log(f"POST /process: wrk {CONNECTIONS} connections {SECONDS} s")
    before = stack.count_jobs()
    result = wrk(stack.api_url, "post.lua")
    result["rows_persisted"] = stack.count_jobs() - before
    return result


def bench_get(stack: Stack, ids_file: Path) -> dict[str, Any]:
    ids = stack.sql("SELECT id FROM jobs ORDER BY created_at DESC LIMIT 1000")
    ids_file.write_text(ids + "\n")
    log(f"GET /task: wrk {CONNECTIONS} connections {SECONDS} s over 1,000 ids")
    return wrk(stack.api_url, "get.lua", {"BENCH_IDS": str(ids_file)})


async def post_jobs(api_url: str, count: int, concurrency: int = 32) -> None:
    numbers = iter(range(count))
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:

        async def sender() -> None:
            for number in numbers:
                response = await client.post(f"/process/{number}")
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(concurrency)))


def clear_jobs(stack: Stack) -> None:
    """Empty the jobs table: the stack is the benchmark's own, so a phase counts every row.

    Waits first until every job of the previous phase has finished, so no queued message of an
    earlier phase competes with the next one.
    """
    deadline = time.monotonic() + 600
    while stack.sql("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") != "0":
        if time.monotonic() > deadline:
            raise RuntimeError("jobs of the previous phase did not finish within 600 s")
        time.sleep(0.5)
    stack.sql("TRUNCATE jobs")


def wait_finished(stack: Stack, expected: int, limit_seconds: float) -> None:
    deadline = time.monotonic() + limit_seconds
    while True:
        done = int(stack.sql("SELECT count(*) FROM jobs WHERE status = 'succeeded'"))
        if done >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {expected} jobs succeeded in {limit_seconds} s")
        time.sleep(0.5)


def bench_drain(stack: Stack, processes: int) -> dict[str, Any]:
    clear_jobs(stack)
    workers = stack.containers("worker")
    for worker in workers:
        worker.stop(timeout=30)
    log(f"drain: enqueue {DRAIN_JOBS} jobs with the workers stopped")
    asyncio.run(post_jobs(stack.api_url, DRAIN_JOBS))
    log(f"drain: start {len(workers)} worker container(s) x {processes} processes")
    started = time.monotonic()
    for worker in workers:
        worker.start()
    wait_finished(stack, DRAIN_JOBS, 600)
    wall = time.monotonic() - started
    first_start, last_finish, seconds = stack.sql(
        "SELECT min(started_at), max(finished_at), "
        "extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs"
    ).split("|")
    drain_seconds = float(seconds)
    return {
        "worker_processes": processes,
        "jobs": DRAIN_JOBS,
        "first_started_at": first_start,
        "last_finished_at": last_finish,
        "seconds": round(drain_seconds, 3),
        "jobs_per_second": round(DRAIN_JOBS / drain_seconds, 1),
        "wall_seconds_from_worker_start": round(wall, 2),
    }


async def steady_posts(api_url: str, rate: int, seconds: int) -> int:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:

        async def one(number: int) -> None:
            response = await client.post(f"/process/{number}")
            response.raise_for_status()

        pending = []
        start = time.monotonic()
        for number in range(rate * seconds):
            await asyncio.sleep(max(0.0, start + number / rate - time.monotonic()))
            pending.append(asyncio.create_task(one(number)))
        await asyncio.gather(*pending)
    return len(pending)


def bench_latency(stack: Stack) -> dict[str, Any]:
    log(f"enqueue -> succeeded: {STEADY_RATE} POST/s for {STEADY_SECONDS} s")
    clear_jobs(stack)
    jobs = asyncio.run(steady_posts(stack.api_url, STEADY_RATE, STEADY_SECONDS))
    wait_finished(stack, jobs, 120)
    p50, p90, p99, worst = (
        stack.sql(
            "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99, 1.0]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM finished_at - created_at) * 1000) "
            "FROM jobs"
        )
        .strip("{}")
        .split(",")
    )
    return {
        "rate_per_second": STEADY_RATE,
        "seconds": STEADY_SECONDS,
        "jobs": jobs,
        "measured_as": "finished_at - created_at of each row (PostgreSQL clock)",
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(worst), 2),
    }


def redis_ceiling() -> dict[str, float]:
    log("ceiling: redis-benchmark -t lpush,rpop")
    output = run(
        [
            *("redis-benchmark", "-h", "127.0.0.1", "-p", str(PORTS["redisHostPort"])),
            *("-t", "lpush,rpop", "-n", "200000", "-c", str(CONNECTIONS), "--csv"),
        ]
    )
    rates: dict[str, float] = {}
    for row in csv.reader(io.StringIO(output)):
        if row and row[0] in ("LPUSH", "RPOP"):
            rates[f"{row[0].lower()}_per_second"] = float(row[1])
    return rates


PGBENCH_SCRIPT = (
    "INSERT INTO bench_ceiling (id, item_id, status, celery_task_id) "
    "VALUES (gen_random_uuid(), 1, 'queued', 'x');"
)


def postgres_ceiling(stack: Stack) -> dict[str, Any]:
    """Single-row INSERT transactions into a copy of the jobs table (same indexes)."""
    log(f"ceiling: pgbench INSERT, {CONNECTIONS} clients {SECONDS} s")
    stack.sql(
        "DROP TABLE IF EXISTS bench_ceiling; CREATE TABLE bench_ceiling (LIKE jobs INCLUDING ALL)"
    )
    (postgres,) = stack.containers("postgres")
    script = PGBENCH_SCRIPT.replace("'", "'\\''")
    command = (
        f"printf '%s\\n' '{script}' > /tmp/insert.sql && "
        f"pgbench -U taskstack -n -c {CONNECTIONS} -j 2 -T {SECONDS} -f /tmp/insert.sql taskstack"
    )
    result = postgres.exec_run(["sh", "-c", command])
    stack.sql("DROP TABLE bench_ceiling")
    output = result.output.decode()
    if result.exit_code != 0:
        raise RuntimeError(f"pgbench failed: {output}")
    tps = next(line for line in output.splitlines() if line.startswith("tps = "))
    latency = next(line for line in output.splitlines() if line.startswith("latency average"))
    return {
        "insert_transactions_per_second": float(tps.split()[2]),
        "latency_average_ms": float(latency.split()[3]),
        "clients": CONNECTIONS,
        "seconds": SECONDS,
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def table(results: dict[str, Any]) -> str:
    post, get, latency = results["post_process"], results["get_task"], results["latency"]
    ceilings = results["ceilings"]
    rows = [
        "| measurement | result |",
        "|---|---|",
        f"| POST /process, {CONNECTIONS} connections {SECONDS} s | "
        f"{post['requests_per_second']:,.0f} req/s, p50 {post['p50_ms']:.1f} ms, "
        f"p99 {post['p99_ms']:.1f} ms; {post['rows_persisted']:,} rows persisted for "
        f"{post['requests']:,} requests, {post['non_2xx']} non-2xx |",
        f"| GET /task, {CONNECTIONS} connections {SECONDS} s | "
        f"{get['requests_per_second']:,.0f} req/s, p50 {get['p50_ms']:.1f} ms, "
        f"p99 {get['p99_ms']:.1f} ms, {get['non_2xx']} non-2xx |",
    ]
    for drain in results["drain"]:
        rows.append(
            f"| drain {drain['jobs']:,} zero-work jobs, {drain['worker_processes']} worker "
            f"process(es) | {drain['jobs_per_second']:,.0f} jobs/s ({drain['seconds']:.2f} s) |"
        )
    rows += [
        f"| enqueue -> succeeded at {latency['rate_per_second']} req/s | "
        f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms |",
        f"| ceiling: Redis (redis-benchmark, {CONNECTIONS} clients) | "
        f"LPUSH {ceilings['redis'].get('lpush_per_second', 0):,.0f}/s, "
        f"RPOP {ceilings['redis'].get('rpop_per_second', 0):,.0f}/s |",
        f"| ceiling: PostgreSQL single-row INSERT transactions (pgbench, {CONNECTIONS} clients) | "
        f"{ceilings['postgres']['insert_transactions_per_second']:,.0f}/s |",
    ]
    return "\n".join(rows)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (drain_axes, latency_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    processes = [drain["worker_processes"] for drain in results["drain"]]
    rates = [drain["jobs_per_second"] for drain in results["drain"]]
    drain_axes.plot(processes, rates, marker="o")
    for x, y in zip(processes, rates, strict=True):
        drain_axes.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6))
    drain_axes.set(
        xlabel="worker processes",
        ylabel="jobs/s",
        title=f"Drain of {DRAIN_JOBS:,} zero-work jobs",
        xticks=processes,
        ylim=(0, max(rates) * 1.25),
    )
    names = ["POST /process", "GET /task", "enqueue→succeeded"]
    sources = [results["post_process"], results["get_task"], results["latency"]]
    width = 0.38
    positions = range(len(names))
    for offset, key in ((-width / 2, "p50_ms"), (width / 2, "p99_ms")):
        values = [source[key] for source in sources]
        bars = latency_axes.bar([p + offset for p in positions], values, width, label=key[:3])
        latency_axes.bar_label(bars, fmt="%.1f", fontsize=8)
    latency_axes.set_xticks(list(positions), names)
    latency_axes.set(ylabel="ms", title="Latency percentiles")
    latency_axes.legend()
    figure.suptitle(
        f"taskstack dev stack, {results['machine']['cpus']} CPUs, {results['date']}", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def preflight() -> None:
    missing = [tool for tool in ("wrk", "redis-benchmark") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y wrk redis-tools")
    busy = [f"{key} {port}" for key, port in PORTS.items() if not port_free(port)]
    if busy:
        raise SystemExit(f"host ports in use: {', '.join(busy)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    preflight()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench",
        "machine": machine(),
        "stack": {
            "name": STACK_NAME,
            "api": "one uvicorn process (the dev stack's, --reload)",
            "app_env": APP_ENV,
        },
    }
    stack = Stack()
    stack.down()  # a leftover of an interrupted run
    try:
        stack.up(worker_processes=2)
        results["post_process"] = bench_post(stack)
        results["get_task"] = bench_get(stack, RESULTS / ".ids.txt")
        results["latency"] = bench_latency(stack)
        drains = {2: bench_drain(stack, 2)}
        for processes in WORKER_PROCESSES:
            if processes not in drains:
                stack.up(worker_processes=processes)
                drains[processes] = bench_drain(stack, processes)
        results["drain"] = [drains[processes] for processes in WORKER_PROCESSES]
        results["ceilings"] = {"redis": redis_ceiling(), "postgres": postgres_ceiling(stack)}
    finally:
        (RESULTS / ".ids.txt").unlink(missing_ok=True)
        if not args.keep:
            stack.down()
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "bench.png")
    print(table(results))
    log(f"wrote {RESULTS / 'bench.json'} and {RESULTS / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
