"""Where a drain's CPU goes: each container's CPU per job while one worker container drains.

    uv run --group bench python -m bench.drain_profile                      # dev, 3 rounds
    uv run --group bench python -m bench.drain_profile --stack prod --rounds 5
    uv run --group bench python -m bench.drain_profile --stack tutorial     # the tutorial's
    uv run --group bench python -m bench.drain_profile --keep               # leave it up

Brings up a stack of ours as `make bench` does (its ports, zero-work jobs, workers at the
tutorial's concurrency), or the tutorial's compose stack as its run does, then, per round: the
workers stopped, K jobs enqueued, one worker container started. Each container's CPU time (its
processes' in `/proc/<pid>/stat`) is read when the first job has finished and again when the
last has, so the worker's start-up is not counted, and divided by the jobs finished in between;
the host's `dockerd` and `containerd-shim` likewise (they carry the containers' log lines and run
their healthchecks). The worker's container is also split into celery's main process and its
pool. One JSON document on stdout, also written to bench/results/drain-profile-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import (
    DRAIN_JOBS,
    RESULTS,
    Stack,
    Tutorial,
    enqueue,
    log,
    machine,
    settle,
    wait_until,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST_PROCESSES = ("dockerd", "containerd-shim", "containerd", "docker-proxy")


def process_cpu_seconds() -> dict[str, float]:
    """CPU time of every process on the host, by the container that holds it (its cgroup) or,
    for the engine's own processes, by command name; and, per container, of its processes whose
    parent is in it too, by that parent's pid (`<id>:children-of:<pid>`): a prefork worker's pool.
    Reaped children count through their parent's `cutime`/`cstime`. Read from /proc: a snapshot
    takes milliseconds, where the engine's stats API takes a moment per container."""
    totals: dict[str, float] = {}
    owner: dict[str, tuple[str, str, float]] = {}  # pid -> (container id, parent pid, seconds)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "stat").read_text()
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        seconds = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
        docker = re.search(r":/docker/([0-9a-f]{64})", cgroup)
        if docker:
            key = docker.group(1)
            owner[proc.name] = (key, fields[1], seconds)
        else:
            name = text[text.index("(") + 1 : text.rindex(")")]
            prefix = next((known for known in HOST_PROCESSES if name.startswith(known)), None)
            if prefix is None:
                continue
            key = f"host:{prefix}"
        totals[key] = totals.get(key, 0.0) + seconds
    for container, parent, seconds in owner.values():
        if owner.get(parent, ("",))[0] == container:
            key = f"{container}:children-of:{parent}"
            totals[key] = totals.get(key, 0.0) + seconds
    return totals


def snapshot(containers: list[tuple[str, Any]], worker: str) -> dict[str, float]:
    """CPU seconds so far per named container, the host's engine processes, and the container
    named `worker` split into its main process and its pool."""
    by_id = process_cpu_seconds()
    seconds = {name: value for name, value in by_id.items() if name.startswith("host:")}
    for name, container in containers:
        seconds[name] = by_id.get(container.id, 0.0)
        if name == worker:
            # Its pool: the processes whose parent is celery's main process, which is either
            # the container's first process (the tutorial's) or that one's child (ours, under
            # docker-init).
            container.reload()
            first = str(container.attrs["State"]["Pid"])
            groups = {
                key.rpartition(":")[2]: value
                for key, value in by_id.items()
                if key.startswith(f"{container.id}:children-of:")
            }
            below = [value for parent, value in groups.items() if parent != first]
            pool = below[0] if len(below) == 1 else groups.get(first, 0.0)
            seconds[f"{name}{SPLIT[0]}"] = seconds[name] - pool
            seconds[f"{name}{SPLIT[1]}"] = pool
    return seconds


def ours(stack: Stack) -> list[tuple[str, Any]]:
    """Each of our containers by role (`worker`, `api-1`, ...)."""
    return [
        (role + ("" if index == 0 else f"-{index}"), container)
        for role in _roles(stack)
        for index, container in enumerate(stack.containers(role))
    ]


def _roles(stack: Stack) -> list[str]:
    return sorted(
        {
            container.labels["com.taskstack.role"]
            for container in stack.deployer.containers()
            if "com.taskstack.role" in container.labels
        }
    )


TUTORIAL_WORKER = "celery-worker"
# The worker container's figure, split: already in the container's own.
SPLIT = (" (main process)", " (pool processes)")
SUCCEEDED = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"


def one_round(stack: Stack, jobs: int) -> dict[str, Any]:
    settle(stack)
    workers = stack.containers("worker")
    for worker in workers:
        worker.stop(timeout=60)
    enqueue(stack.api_url, jobs, stack.headers)
    workers[0].start()
    wait_until(stack, SUCCEEDED, 1, 120)
    before, started = snapshot(ours(stack), "worker"), time.monotonic()
    first = int(stack.sql(SUCCEEDED))
    wait_until(stack, SUCCEEDED, jobs, 900)
    after, ended = snapshot(ours(stack), "worker"), time.monotonic()
    for worker in workers[1:]:
        worker.start()
    seconds = float(
        stack.sql("SELECT extract(epoch FROM max(finished_at) - min(finished_at)) FROM jobs")
    )
    return _round(jobs, seconds, jobs - first, ended - started, before, after)


def one_tutorial_round(tutorial: Tutorial, jobs: int) -> dict[str, Any]:
    """The same round on the tutorial's stack: its worker's results counted in its Redis."""
    tutorial.fill(jobs)
    tutorial.container("celery-worker").start()
    tutorial.wait_results(1, 120)
    containers = list(tutorial.containers().items())
    before, started = snapshot(containers, TUTORIAL_WORKER), time.monotonic()
    first = int(tutorial.container("redis").exec_run(["redis-cli", "-n", "1", "dbsize"]).output)
    tutorial.wait_results(jobs)
    stamps = tutorial.finished_stamps(jobs)
    after, ended = snapshot(containers, TUTORIAL_WORKER), time.monotonic()
    seconds = (stamps[-1] - stamps[0]).total_seconds()
    return _round(jobs, seconds, jobs - first, ended - started, before, after)


def _round(
    jobs: int,
    seconds: float,
    counted: int,
    wall: float,
    before: dict[str, float],
    after: dict[str, float],
) -> dict[str, Any]:
    per_job_us = {
        name: round((after[name] - before.get(name, 0.0)) / counted * 1e6)
        for name in after
        if after[name] - before.get(name, 0.0) > 0
    }
    return {
        "jobs": jobs,
        "jobs_per_second": round((jobs - 1) / seconds, 1),
        "jobs_counted": counted,
        "wall_seconds_counted": round(wall, 2),
        "cpu_us_per_job": dict(sorted(per_job_us.items(), key=lambda item: -item[1])),
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for result in rounds for name in result["cpu_us_per_job"]})
    medians = {
        name: statistics.median(result["cpu_us_per_job"].get(name, 0) for result in rounds)
        for name in names
    }
    return {
        "jobs_per_second_median": statistics.median(r["jobs_per_second"] for r in rounds),
        "cpu_us_per_job_median": dict(sorted(medians.items(), key=lambda item: -item[1])),
        # The worker's split into main process and pool is already in its container's figure.
        "cpu_us_per_job_total": round(
            sum(value for name, value in medians.items() if not name.endswith(SPLIT))
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="dev", choices=["dev", "prod", "tutorial"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=DRAIN_JOBS)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a stack setting on top"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
    args = parser.parse_args()
    stack: Stack | Tutorial
    if args.stack == "tutorial":
        stack = Tutorial()
    else:
        stack = Stack(args.stack, overrides=dict(item.split("=", 1) for item in args.set))
    stack.up()
    try:
        rounds = []
        for number in range(args.rounds):
            if isinstance(stack, Tutorial):
                rounds.append(one_tutorial_round(stack, args.jobs))
            else:
                rounds.append(one_round(stack, args.jobs))
            log(f"round {number + 1}: {json.dumps(rounds[-1])}")
        now = datetime.now(UTC)
        report = {
            "date": now.strftime("%Y-%m-%d"),
            "started_at": now.isoformat(timespec="seconds"),
            "command": "python -m bench.drain_profile " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "stack": args.stack,
            "settings": args.set,
            "rounds": rounds,
            **summary(rounds),
        }
    finally:
        if not args.keep:
            stack.down()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"drain-profile-{now.strftime('%Y-%m-%d-%H%M')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
