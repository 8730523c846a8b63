"""`make bench`: this stack against the tutorial's own, side by side in one sitting (docs/bench.md).

1. The tutorial: `../shared/tutorial-bench/run` brings its compose stack up on this engine,
   measures it and prints one JSON line (its header gives the method).
2. Ours, measured the same way, on the dev stack and then the prod stack, brought up by the
   deployer DEPLOYER names (deploy/: the rehearsal, `python -m rehearsal up --stack dev|prod`,
   unless DEPLOYER=pulumi), under their own stack names and host ports,
   JOB_WORK_SECONDS=0, the stack files' own API processes and workers):
   - POST /process: `wrk -t2 -c32 -d10s -s post.lua`, the tutorial's own script (a new item id per
     request), the workers draining meanwhile; through the proxy (the published port), then
     straight to the API copies (one `wrk -t1` per copy, the 32 connections split between them, on
     their addresses on the stack's bridge network): what the proxy costs;
   - GET /task/{id}: `wrk -t2 -c32 -d10s` on one finished job, the same two ways;
   - drain: the workers stopped, K jobs enqueued through the API by 16 client threads, one worker
     container started (every worker runs at the tutorial's concurrency in the bench, so that is
     the tutorial's worker); (K-1) / (finish of the K-th job - finish of the 1st), so worker
     start-up is not counted (the tutorial times its results in Redis, we read `finished_at`);
     then the same with all of the stack's workers, a separate figure;
   - enqueue -> succeeded at light load: 20 POSTs a second for 10 s on idle workers, the p50 and
     p99 of `finished_at - created_at`.
3. What monitoring and archiving cost, on the prod stack, over AB_ROUNDS rounds, each the median
   of the rounds' on / off ratios. Each thing is switched off and on every AB_SLICE_SECONDS within
   one load (`interleaved`), so both sides share each moment of the machine: monitoring by
   freezing its four containers (what `monitoring: false` changes for the load: the app's
   instrumentation is the same either way), archiving by stopping PostgreSQL's archiver and
   freezing the backup role. POST (`wrk -d20s`, counted by the rows created in each slice) and a
   10,000-job drain (counted by `finished_at`) for both; GET for monitoring, a wrk run with it off
   and one with it on.
4. Prints a table of both and the ratios, and the A/B's; writes `bench/results/bench.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import concurrent.futures
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import docker.errors
import httpx

from bench import plot
from deploy import Deployer, deployer
from infra.spec.model import MONITORING_ROLES

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TUTORIAL_BENCH = REPO.parent / "shared" / "tutorial-bench"
POST_LUA = TUTORIAL_BENCH / "post.lua"
APP_ENV = ["JOB_WORK_SECONDS=0"]
DRAIN_JOBS = int(os.environ.get("K", "3000"))
# The tutorial's one worker container runs `celery worker --concurrency=4`.
TUTORIAL_WORKER_CONCURRENCY = 4
ENQUEUE_THREADS = 16
STEADY_RATE = 20
STEADY_SECONDS = 10
WRK = ["wrk", "-t2", "-c32", "-d10s"]
# Host ports clear of the machine's services, `make rehearse` and the e2e rehearsal's stacks.
PORTS = {
    "dev": {
        "apiPort": 18300,
        "flowerPort": 15855,
        "postgresHostPort": 25732,
        "redisHostPort": 26679,
    },
    "prod": {
        "apiPort": 18400,
        "flowerPort": 15955,
        "prometheusPort": 18490,
        "alertmanagerPort": 18493,
    },
}
AB_ROUNDS = int(os.environ.get("AB_ROUNDS", "5"))
# The A/B's loads are longer than the comparison's, so that a run holds many slices: a 10,000-job
# drain, a 20-second POST run.
AB_DRAIN_JOBS = int(os.environ.get("AB_DRAIN_JOBS", "10000"))
AB_POST_SECONDS = 20
# How long each side lasts within one load: long against a switch (containers frozen or thawed,
# processes signalled), short against the machine's swings.
AB_SLICE_SECONDS = 2.0
AB_WARM_UP_SLICES = 2


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_answering(url: str, seconds: float = 120) -> None:
    """Until GET `url` answers 200."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {seconds} s")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Stack:
    """One of our stacks (dev or prod) the benchmark brings up, measures and removes."""

    kind: str
    # A second stack of the same kind: its own name and ports (PORTS["<kind>-<variant>"]) and
    # these stack settings on top.
    variant: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    deployer: Deployer = field(init=False)

    def __post_init__(self) -> None:
        # What the deployer prints is shown as it comes, on stderr.
        self.deployer = deployer(self.kind, f"bench-{self.ports_key}", echo=True)

    @property
    def ports_key(self) -> str:
        return f"{self.kind}-{self.variant}" if self.variant else self.kind

    @property
    def name(self) -> str:
        return self.deployer.name

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{PORTS[self.ports_key]['apiPort']}"

    headers: dict[str, str] = field(default_factory=dict, init=False)

    def up(self) -> None:
        log(f"up {self.name}")
        config = {key: str(value) for key, value in PORTS[self.ports_key].items()}
        config["appEnv"] = json.dumps(APP_ENV)
        # Every worker at the tutorial's concurrency, so that one worker container is the
        # tutorial's worker (the comparison's drain); dev's own is 2.
        config["workerConcurrency"] = str(TUTORIAL_WORKER_CONCURRENCY)
        config.update(self.overrides)
        self.deployer.up(config)
        self.wait_ready()
        self.headers = self.client_key()
        if self.containers("backup"):
            # A prod stack's backup role takes its first full backup and verifies it as soon as
            # the stack is up: a minute of CPU that is start-up, not the load being measured.
            log("waiting for the backup role's first full backup and its verify")
            wait_until(self, "SELECT count(*) FROM backup_status WHERE kind = 'full'", 1, 600)

    def client_key(self) -> dict[str, str]:
        """A key of the bench's own, limits out of the way (a prod stack wants one for every
        request: docs/app.md "API keys"), made as an operator makes one; none for dev."""
        api = self.containers("api")[0]
        if "AUTH_REQUIRED=true" not in api.attrs["Config"]["Env"]:
            return {}
        command = ["python", "-m", "app.keys", "create", f"bench-{int(time.time())}"]
        command += ["--rate-per-second", "1000000", "--burst", "1000000"]
        command += ["--max-concurrent", "10000"]
        created = api.exec_run(command, demux=True)
        if created.exit_code != 0:
            raise RuntimeError(f"app.keys create failed: {created.output}")
        key = created.output[0].decode().strip()
        time.sleep(3)  # every API process rereads its keys within API_KEY_CACHE_SECONDS
        return {"Authorization": f"Bearer {key}"}

    def down(self) -> None:
        log(f"down {self.name} (volumes too)")
        self.deployer.down(volumes=True, check=False)

    def wait_ready(self) -> None:
        wait_answering(f"{self.api_url}/health/ready")

    def containers(self, role: str) -> list[Any]:
        return list(self.deployer.containers(role))

    def sql(self, statement: str) -> str:
        """Run SQL in the stack's PostgreSQL container (local socket, no credentials here)."""
        (postgres,) = self.containers("postgres")
        command = ["psql", "-U", "taskstack", "-d", "taskstack", "-AtX", "-v", "ON_ERROR_STOP=1"]
        # Every statement here prints something; an empty answer is the exec's output lost on a
        # saturated engine (seen once in a 2026-12-04 sitting), so it is asked again.
        for _ in range(3):
            result = postgres.exec_run([*command, "-c", statement])
            if result.exit_code != 0:
                raise RuntimeError(f"psql failed: {result.output.decode()}")
            if output := str(result.output.decode()).strip():
                return output
            time.sleep(0.5)
        raise RuntimeError(f"psql printed nothing for {statement!r}, three times")

    def api_addresses(self) -> list[str]:
        """Each API copy's own URL on the stack's app network (the proxy's upstreams)."""
        network = f"taskstack-{self.name}-app"
        return [
            f"http://{api.attrs['NetworkSettings']['Networks'][network]['IPAddress']}:8000"
            for api in self.containers("api")
        ]

    def shape(self) -> dict[str, Any]:
        """What serves the load: API copies and processes (uvicorn's command line), workers."""
        apis = self.containers("api")
        command = apis[0].attrs["Config"]["Cmd"]
        workers = self.containers("worker")
        concurrency = [
            arg.split("=", 1)[1]
            for arg in workers[0].attrs["Config"]["Cmd"]
            if arg.startswith("--concurrency=")
        ]
        per_copy = int(command[command.index("--workers") + 1]) if "--workers" in command else 1
        return {
            "api_copies": len(apis),
            "api_processes": per_copy * len(apis),
            "worker_containers": len(workers),
            "worker_concurrency": int(concurrency[0]) if concurrency else None,
        }


def wrk(*arguments: str) -> dict[str, Any]:
    """wrk's request rate and failures, read from its text report (as the tutorial's run does)."""
    return wrk_with(WRK, *arguments)


def header_args(headers: dict[str, str]) -> list[str]:
    """wrk's -H for each header (the API key of a prod stack)."""
    return [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]


def wrk_with(command: list[str], *arguments: str) -> dict[str, Any]:
    output = subprocess.run(
        [*command, *arguments], check=True, capture_output=True, text=True
    ).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else 0.0

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests_per_second": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": int(number(r"(\d+) requests in")),
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": sum(int(count) for count in errors.groups()) if errors else 0,
    }


def wrk_split(urls: list[str], *arguments: str) -> dict[str, Any]:
    """The same load as `wrk` (2 threads, 32 connections, 10 s) split over `urls`, one wrk per URL
    at once; rates and counts summed."""
    connections = 32 // len(urls)
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        parts = list(
            pool.map(
                lambda url: wrk_with(
                    ["wrk", f"-t{max(1, 2 // len(urls))}", f"-c{connections}", "-d10s"],
                    *arguments,
                    url,
                ),
                urls,
            )
        )
    return {key: round(sum(part[key] for part in parts), 2) for key in parts[0]}


def wait_until(stack: Stack, query: str, expected: int, seconds: float) -> None:
    """Until `query` counts `expected`, polled inside PostgreSQL by one statement (a loop with
    `pg_sleep`): one `docker exec` per wait, not one per poll, whose start-up would take CPU from
    the stack being measured."""
    loop = f"""
DO $wait$
DECLARE deadline timestamptz := clock_timestamp() + interval '{seconds} seconds';
BEGIN
    WHILE ({query}) < {expected} LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'after {seconds} s: % of {expected}', ({query});
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$wait$;
SELECT 'done';
"""
    stack.sql(loop)


def settle(stack: Stack) -> None:
    """Every job of the previous phase finished, then the table emptied: a phase counts its own."""
    wait_until(stack, "SELECT (count(*) = 0)::int FROM jobs WHERE status <> 'succeeded'", 1, 900)
    stack.sql("TRUNCATE jobs")


def bench_post(stack: Stack) -> dict[str, Any]:
    log("POST /process: wrk -t2 -c32 -d10s -s post.lua (the tutorial's), through the proxy")
    result = wrk(*header_args(stack.headers), "-s", str(POST_LUA), stack.api_url)
    result["rows_committed"] = int(stack.sql("SELECT count(*) FROM jobs"))
    settle(stack)
    log("POST /process, the same load straight to the API copies (no proxy)")
    result["direct"] = wrk_split(
        stack.api_addresses(), *header_args(stack.headers), "-s", str(POST_LUA)
    )
    return result


def finished_job(stack: Stack) -> str:
    """A finished job's id, on an otherwise empty table."""
    settle(stack)
    answer = httpx.post(f"{stack.api_url}/process/1", headers=stack.headers)
    task_id = str(answer.json()["task_id"])
    wait_until(stack, "SELECT count(*) FROM jobs WHERE status = 'succeeded'", 1, 60)
    return task_id


def bench_get(stack: Stack) -> dict[str, Any]:
    task_id = finished_job(stack)
    log("GET /task/{id} of a finished job: wrk -t2 -c32 -d10s, through the proxy")
    result = wrk(*header_args(stack.headers), f"{stack.api_url}/task/{task_id}")
    log("GET /task/{id}, the same load straight to the API copies (no proxy)")
    result["direct"] = wrk_split(
        [f"{url}/task/{task_id}" for url in stack.api_addresses()], *header_args(stack.headers)
    )
    return result


def enqueue(api_url: str, count: int, headers: dict[str, str], accepted: int = 202) -> None:
    """POST /process for item ids 1..count from 16 threads, as the tutorial's run does; each
    answered `accepted` (ours 202, the tutorial's 200)."""

    def post(item: int) -> int:
        request = urllib.request.Request(  # noqa: S310 - our stack
            f"{api_url}/process/{item}", method="POST", headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our stack
            return int(response.status)

    with concurrent.futures.ThreadPoolExecutor(ENQUEUE_THREADS) as pool:
        statuses = list(pool.map(post, range(1, count + 1)))
    refused = sum(status != accepted for status in statuses)
    if refused:
        raise RuntimeError(f"{refused} of {count} POSTs were not accepted")


def bench_drain(
    stack: Stack, jobs: int = DRAIN_JOBS, *, one_worker: bool = False
) -> dict[str, Any]:
    """`one_worker`: only the first worker container drains (at TUTORIAL_WORKER_CONCURRENCY, the
    tutorial's own worker); otherwise all of the stack's."""
    settle(stack)
    workers = stack.containers("worker")
    for worker in workers:
        worker.stop(timeout=60)
    draining = workers[:1] if one_worker else workers
    log(f"drain: {jobs} jobs enqueued with the workers stopped, then {len(draining)} started")
    enqueue(stack.api_url, jobs, stack.headers)
    for worker in draining:
        worker.start()
    query = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
    wait_until(stack, query, jobs, 900)
    seconds = float(
        stack.sql("SELECT extract(epoch FROM max(finished_at) - min(finished_at)) FROM jobs")
    )
    rows = stack.sql("SELECT count(*) FROM jobs WHERE result IS NOT NULL")
    for worker in workers[len(draining) :]:
        worker.start()
    return {
        "workers": len(draining),
        "jobs": jobs,
        "seconds_first_to_last_result": round(seconds, 3),
        "jobs_per_second": round((jobs - 1) / seconds, 1),
        "rows_succeeded_with_result": int(rows),
    }


async def steady_posts(api_url: str, rate: int, seconds: int, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as client:

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
    settle(stack)
    log(f"enqueue -> succeeded: {STEADY_RATE} POST/s for {STEADY_SECONDS} s")
    jobs = asyncio.run(steady_posts(stack.api_url, STEADY_RATE, STEADY_SECONDS, stack.headers))
    wait_until(stack, "SELECT count(*) FROM jobs WHERE status = 'succeeded'", jobs, 120)
    p50, p99 = (
        stack.sql(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM finished_at - created_at) * 1000) FROM jobs"
        )
        .strip("{}")
        .split(",")
    )
    return {"jobs": jobs, "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def resources(stack: Stack, up_at: float) -> dict[str, Any]:
    """Each running container's memory use (its cgroup's, as `docker stats` shows it) and the CPU
    seconds it used since the stack came up, after the load: what each role costs."""
    per_container: dict[str, dict[str, float]] = {}
    for container in stack.deployer.containers():
        if container.status != "running":
            continue
        stats = container.stats(stream=False)
        memory = stats["memory_stats"]
        inactive = memory.get("stats", {}).get("inactive_file", 0)
        role = container.labels.get("com.taskstack.role", container.name)
        name = role if role not in per_container else container.name
        per_container[name] = {
            "memory_mib": round((memory.get("usage", 0) - inactive) / 2**20, 1),
            "cpu_seconds": round(stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9, 2),
        }
    return {"seconds_since_up": round(time.monotonic() - up_at, 1), "containers": per_container}


def set_paused(containers: list[Any], paused: bool) -> None:
    """Freeze (or thaw) the containers at once: a frozen container takes no CPU, as a stopped one,
    and thaws without a restart's start-up work."""

    def change(container: Any) -> None:
        try:
            container.pause() if paused else container.unpause()
        except docker.errors.APIError as error:
            # "is already paused" / "is not paused": already as asked.
            if "paused" not in str(error.explanation):
                raise

    with concurrent.futures.ThreadPoolExecutor(max(1, len(containers))) as pool:
        list(pool.map(change, containers))


def monitoring_switch(stack: Stack) -> Callable[[bool], None]:
    """Monitoring on or off: its four containers thawed or frozen."""
    monitors = [container for role in MONITORING_ROLES for container in stack.containers(role)]
    return lambda on: set_paused(monitors, not on)


ARCHIVING_PROCESSES = ("postgres: archiver", "pgbackrest ", "sh -c pgbackrest ")


def archiving_switch(stack: Stack) -> Callable[[bool], None]:
    """Archiving on or off: PostgreSQL's archiver (and any `pgbackrest archive-push` it runs)
    continued or stopped by signal, the backup role thawed or frozen. The segments held back while
    off are pushed in the next slice on, so the cost measured is, if anything, too high."""
    (postgres,) = stack.containers("postgres")
    backups = stack.containers("backup")

    def switch(on: bool) -> None:
        set_paused(backups, not on)
        for process in postgres.top(ps_args="-eo pid,args")["Processes"]:
            pid, command = int(process[0]), " ".join(process[1:])
            # The archiver ("postgres: archiver ...") and the command it runs, not the server
            # itself, whose own arguments name archive_command.
            if command.startswith(ARCHIVING_PROCESSES):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT if on else signal.SIGSTOP)

    return switch


def interleaved(
    stack: Stack,
    switch: Callable[[bool], None],
    load: Callable[[], Any],
    column: Literal["created_at", "finished_at"],
) -> dict[str, Any]:
    """`load` run once, the thing `switch` turns on and off every AB_SLICE_SECONDS meanwhile, so
    that both sides share each moment of the machine. Each side's rate is the jobs whose `column`
    (created_at for POSTs, finished_at for a drain) fell in its slices over those slices' time.
    The first AB_WARM_UP_SLICES (start-up, on) and the last slice (the tail) are not counted, nor
    the switches' own moments; the counted ones go on, off, off, on, ..., so that a load that
    speeds up or slows down over its run favours neither side."""
    slices: list[tuple[float, float, bool]] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(load)
            number = 0
            while not running.done():
                position = number - AB_WARM_UP_SLICES
                on = position < 0 or position % 4 in (0, 3)
                switch(on)
                begun = time.time()
                concurrent.futures.wait([running], timeout=AB_SLICE_SECONDS)
                slices.append((begun, time.time(), on))
                number += 1
            running.result()
    finally:
        switch(True)
    moments = f"SELECT extract(epoch FROM {column}) FROM jobs"  # noqa: S608 - our own column
    times = sorted(float(line) for line in stack.sql(moments).split())
    counted = slices[AB_WARM_UP_SLICES:-1]
    totals = {True: [0, 0.0], False: [0, 0.0]}
    for begun, ended, on in counted:
        totals[on][0] += bisect.bisect_left(times, ended) - bisect.bisect_left(times, begun)
        totals[on][1] += ended - begun
    rates = {side: totals[side][0] / totals[side][1] for side in (True, False)}
    return {
        "slices_counted": len(counted),
        "seconds_counted": {"on": round(totals[True][1], 2), "off": round(totals[False][1], 2)},
        "jobs_per_second": {"on": round(rates[True], 1), "off": round(rates[False], 1)},
        "on_over_off": round(rates[True] / rates[False], 3),
    }


def interleaved_post(stack: Stack, switch: Callable[[bool], None]) -> dict[str, Any]:
    """POST through the proxy (`wrk -d AB_POST_SECONDS`), counted by the rows it created."""
    settle(stack)
    command = ["wrk", "-t2", "-c32", f"-d{AB_POST_SECONDS}s"]
    arguments = [*header_args(stack.headers), "-s", str(POST_LUA), stack.api_url]
    return interleaved(stack, switch, lambda: wrk_with(command, *arguments), "created_at")


def interleaved_drain(stack: Stack, switch: Callable[[bool], None]) -> dict[str, Any]:
    """AB_DRAIN_JOBS enqueued with the workers stopped, then all of them started."""
    settle(stack)
    workers = stack.containers("worker")
    for worker in workers:
        worker.stop(timeout=60)
    enqueue(stack.api_url, AB_DRAIN_JOBS, stack.headers)
    query = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"

    def drain() -> None:
        for worker in workers:
            worker.start()
        wait_until(stack, query, AB_DRAIN_JOBS, 900)

    return interleaved(stack, switch, drain, "finished_at")


def costs_ab(stack: Stack) -> dict[str, Any]:
    """What monitoring and archiving cost the prod stack, each on and off in turn within one load
    (`interleaved`), over AB_ROUNDS rounds: POST and a drain for both; GET for monitoring, a run
    with monitoring frozen and one without in an order alternated each round. Each round's on /
    off ratios and their medians (docs/bench.md, "What monitoring and archiving cost")."""
    switches = {"monitoring": monitoring_switch(stack), "archiving": archiving_switch(stack)}
    rounds: list[dict[str, Any]] = []
    for number in range(AB_ROUNDS):
        log(f"costs A/B, round {number + 1} of {AB_ROUNDS}")
        measured: dict[str, dict[str, Any]] = {cost: {} for cost in switches}
        get: dict[bool, float] = {}
        url = f"{stack.api_url}/task/{finished_job(stack)}"
        for on in (True, False) if number % 2 == 0 else (False, True):
            switches["monitoring"](on)
            get[on] = wrk(*header_args(stack.headers), url)["requests_per_second"]
        switches["monitoring"](True)
        measured["monitoring"]["get"] = {
            "requests_per_second": {"on": get[True], "off": get[False]},
            "on_over_off": round(get[True] / get[False], 3),
        }
        for cost, switch in switches.items():
            log(f"{cost} on and off: POST, then a drain of {AB_DRAIN_JOBS:,}")
            measured[cost]["post"] = interleaved_post(stack, switch)
            measured[cost]["drain"] = interleaved_drain(stack, switch)
        ratios = {
            cost: {key: one["on_over_off"] for key, one in sides.items()}
            for cost, sides in measured.items()
        }
        rounds.append({**measured, "on_over_off": ratios})
    medians = {
        cost: {
            key: round(statistics.median(one["on_over_off"][cost][key] for one in rounds), 3)
            for key in rounds[0]["on_over_off"][cost]
        }
        for cost in switches
    }
    return {"rounds": rounds, "median_on_over_off": medians}


def measure(kind: str) -> dict[str, Any]:
    stack = Stack(kind)
    stack.down()  # a leftover of an interrupted run
    try:
        stack.up()
        up_at = time.monotonic()
        measured = {
            **stack.shape(),
            "post": bench_post(stack),
            "get": bench_get(stack),
            # The comparison's drain: one worker container at the tutorial's concurrency.
            "drain": bench_drain(stack, one_worker=True),
            "drain_own_workers": bench_drain(stack),
            "latency": bench_latency(stack),
        }
        measured["resources_after_load"] = resources(stack, up_at)
        if AB_ROUNDS and stack.containers("prometheus") and stack.containers("backup"):
            measured["costs_ab"] = costs_ab(stack)
        return measured
    finally:
        stack.down()


TUTORIAL_PROJECT = "tutorialbench"
TUTORIAL_URL = "http://127.0.0.1:18050"
# Each result the tutorial's worker stores in Redis (db 1), with the moment it finished.
TUTORIAL_FINISHED = """
local done = {}
for _, key in ipairs(redis.call('KEYS', 'celery-task-meta-*')) do
    local meta = cjson.decode(redis.call('GET', key))
    if meta['status'] == 'SUCCESS' then table.insert(done, meta['date_done']) end
end
return done
"""


def measure_tutorial() -> dict[str, Any]:
    """The tutorial's own run (its script, as given), then its drain measured again the way ours
    is (`tutorial_drain`); the comparison uses the latter, both are kept."""
    log(f"the tutorial's stack: {TUTORIAL_BENCH / 'run'} (about 2 minutes)")
    tutorial = Tutorial()
    try:
        completed = subprocess.run(
            ["bash", str(TUTORIAL_BENCH / "run")],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "K": str(DRAIN_JOBS), "KEEP": "1"},
        )
        result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        result["drain_its_own_run_jobs_per_s"] = result["drain_jobs_per_s"]
        result["drain_jobs_per_s"] = tutorial_drain(tutorial, DRAIN_JOBS)
        return result
    finally:
        tutorial.down()


class Tutorial:
    """The tutorial's compose stack (../shared/tutorial-bench/stack), as its run brings it up."""

    stack_dir = TUTORIAL_BENCH / "stack"

    def compose(self, *args: str) -> None:
        subprocess.run(
            ["docker-compose", "-p", TUTORIAL_PROJECT, *args],
            cwd=self.stack_dir,
            check=True,
            capture_output=True,
            env={**os.environ, "TASK_SLEEP": "0"},
        )

    def up(self) -> None:
        """Up with zero-work jobs (what its run does), once its API answers."""
        self.compose("up", "-d", "--build")
        wait_answering(f"{TUTORIAL_URL}/health")

    def down(self) -> None:
        subprocess.run(
            ["docker-compose", "-p", TUTORIAL_PROJECT, "down", "-v"],
            cwd=self.stack_dir,
            check=False,
            capture_output=True,
        )

    def container(self, service: str) -> Any:
        import docker

        return docker.from_env().containers.get(f"{TUTORIAL_PROJECT}_{service}_1")

    def containers(self) -> dict[str, Any]:
        """Its running containers by compose service."""
        import docker

        found = docker.from_env().containers.list(
            filters={"label": f"com.docker.compose.project={TUTORIAL_PROJECT}"}
        )
        return {c.labels["com.docker.compose.service"]: c for c in found}

    def fill(self, jobs: int) -> None:
        """Its worker stopped, both Redis dbs emptied, `jobs` enqueued through its API."""
        self.container("celery-worker").stop(timeout=60)
        for db in ("0", "1"):
            self.container("redis").exec_run(["redis-cli", "-n", db, "flushdb"])
        enqueue(TUTORIAL_URL, jobs, {}, accepted=200)

    def wait_results(self, count: int, seconds: float = 900) -> None:
        """Until `count` results are stored (STARTED or SUCCESS), asked of one `redis-cli`
        session: its own run starts a `docker exec` per poll, ten a second, whose CPU the drain
        shares (ours waits inside PostgreSQL: `wait_until`)."""
        session = subprocess.Popen(
            ["docker", "exec", "-i", self.container("redis").name, "redis-cli", "-n", "1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert session.stdin is not None
        assert session.stdout is not None
        deadline = time.monotonic() + seconds
        try:
            while True:
                session.stdin.write("DBSIZE\n")
                session.stdin.flush()
                if int(session.stdout.readline()) >= count:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the tutorial: under {count} results after {seconds} s")
                time.sleep(0.05)
        finally:
            session.communicate("", timeout=30)

    def finished_stamps(self, count: int) -> list[datetime]:
        """The `date_done` of each stored SUCCESS, once there are `count` of them, sorted."""
        redis = self.container("redis")
        while True:  # a result stored STARTED becomes SUCCESS a moment later
            done = redis.exec_run(["redis-cli", "-n", "1", "--raw", "EVAL", TUTORIAL_FINISHED, "0"])
            stamps = sorted(datetime.fromisoformat(line) for line in done.output.decode().split())
            if len(stamps) >= count:
                return stamps
            time.sleep(0.2)


def tutorial_drain(tutorial: Tutorial, jobs: int) -> float:
    """The tutorial's drain as `bench_drain` measures ours: its worker stopped, `jobs` enqueued
    through its API by ENQUEUE_THREADS threads, the worker started, waited for without a
    `docker exec` per poll (`Tutorial.wait_results`); rate = (jobs - 1) / (the last result's
    `date_done` - the first one's), each stamped by its worker as ours are by PostgreSQL."""
    tutorial.fill(jobs)
    log(f"the tutorial's drain, measured as ours: {jobs} jobs enqueued, its worker started")
    tutorial.container("celery-worker").start()
    tutorial.wait_results(jobs)
    stamps = tutorial.finished_stamps(jobs)
    return round((jobs - 1) / (stamps[-1] - stamps[0]).total_seconds(), 1)


def machine() -> dict[str, Any]:
    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def ratios(ours: dict[str, Any], tutorial: dict[str, Any]) -> dict[str, float]:
    return {
        "post": round(ours["post"]["requests_per_second"] / tutorial["post_rps"], 2),
        "get": round(ours["get"]["requests_per_second"] / tutorial["get_rps"], 2),
        "drain": round(ours["drain"]["jobs_per_second"] / tutorial["drain_jobs_per_s"], 2),
    }


TARGETS = {"post": 2.0, "get": 3.0, "drain": 1.5}


def _rate(result: dict[str, Any], key: str) -> float:
    measured = result[key]
    return float(measured["jobs_per_second" if key == "drain" else "requests_per_second"])


def _kept(measured: dict[str, Any]) -> float:
    direct = float(measured["direct"]["requests_per_second"])
    return float(measured["requests_per_second"]) / direct if direct else 0.0


def table(results: dict[str, Any]) -> str:
    tutorial = results["tutorial"]
    kinds = [kind for kind in ("dev", "prod") if kind in results]
    columns = "".join(f" ours, {kind} | ratio (target) |" for kind in kinds)
    rows = [f"| | tutorial |{columns}", "|---" * (2 + 2 * len(kinds)) + "|"]
    labels = {
        "post": ("POST /process (req/s)", tutorial["post_rps"]),
        "get": ("GET /task/{id} (req/s)", tutorial["get_rps"]),
        "drain": (
            f"drain of {DRAIN_JOBS:,}, 1 worker x {TUTORIAL_WORKER_CONCURRENCY} each (jobs/s)",
            tutorial["drain_jobs_per_s"],
        ),
    }
    for key, (label, theirs) in labels.items():
        cells = "".join(
            f" {_rate(results[kind], key):,.0f} | "
            f"{results[kind]['ratios'][key]:.2f}x (>= {TARGETS[key]}x) |"
            for kind in kinds
        )
        rows.append(f"| {label} | {theirs:,.0f} |{cells}")
    latency = "".join(
        f" p50 {results[kind]['latency']['p50_ms']:.1f} ms, "
        f"p99 {results[kind]['latency']['p99_ms']:.1f} ms | (p50 < 20 ms) |"
        for kind in kinds
    )
    rows.append(f"| enqueue -> succeeded, 20 req/s | - |{latency}")
    own = ""
    for kind in kinds:
        rate = results[kind]["drain_own_workers"]["jobs_per_second"]
        shape = f"{results[kind]['worker_containers']} x {results[kind]['worker_concurrency']}"
        own += f" {rate:,.0f} ({shape}) | {rate / tutorial['drain_jobs_per_s']:.2f}x |"
    rows.append(f"| drain, the stack's own workers (jobs/s) | - |{own}")
    for key, label in (("post", "POST"), ("get", "GET")):
        direct = "".join(
            f" {results[kind][key]['direct']['requests_per_second']:,.0f} without the proxy | "
            f"proxy keeps {_kept(results[kind][key]):.0%} |"
            for kind in kinds
        )
        rows.append(f"| {label}, straight to the API copies | - |{direct}")
    shapes = "".join(
        f" {results[kind]['api_copies']} API copies ({results[kind]['api_processes']} processes)"
        f" behind HAProxy, {results[kind]['worker_containers']}"
        f" worker(s) x {results[kind]['worker_concurrency']} | |"
        for kind in kinds
    )
    rows.append(f"| what serves it | 1 API process, 1 worker x 4 |{shapes}")
    return "\n".join(rows)


# The bounds asked: what each may cost (monitoring: docs/observability.md; archiving:
# docs/backup.md).
AB_BOUNDS = {
    "monitoring": {"post": 0.05, "get": 0.10, "drain": 0.05},
    "archiving": {"post": 0.05, "drain": 0.05},
}


def costs_table(results: dict[str, Any]) -> str:
    """What monitoring and archiving cost the prod stack: each round's on / off and the median."""
    if "costs_ab" not in results.get("prod", {}):
        return ""
    ab = results["prod"]["costs_ab"]
    rounds = " | ".join(f"round {number}" for number in range(1, len(ab["rounds"]) + 1))
    rows = [f"| on / off | {rounds} | median | bound |"]
    rows.append("|---" * (len(ab["rounds"]) + 3) + "|")
    labels = {"post": "POST /process", "get": "GET /task/{id}", "drain": "drain"}
    for cost, bounds in AB_BOUNDS.items():
        for key, bound in bounds.items():
            cells = " | ".join(f"{one['on_over_off'][cost][key]:.3f}" for one in ab["rounds"])
            median = ab["median_on_over_off"][cost][key]
            rows.append(f"| {cost}: {labels[key]} | {cells} | {median:.3f} | within {bound:.0%} |")
    return "\n".join(rows)


def preflight(kinds: list[str]) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    if not (TUTORIAL_BENCH / "run").exists():
        raise SystemExit(f"{TUTORIAL_BENCH / 'run'} is missing: ../shared must sit beside the repo")
    busy = [
        f"{key} {port}"
        for kind in kinds
        for stack, ports in PORTS.items()
        if stack.split("-")[0] == kind
        for key, port in ports.items()
        if not port_free(port)
    ]
    if busy:
        raise SystemExit(f"host ports in use: {', '.join(busy)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="dev,prod", help="which of ours to measure")
    args = parser.parse_args()
    kinds = [kind for kind in args.stacks.split(",") if kind]
    preflight(kinds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench",
        "machine": machine(),
        "app_env": APP_ENV,
    }
    results["tutorial"] = measure_tutorial()
    log(f"tutorial: {json.dumps(results['tutorial'])}")
    for kind in kinds:
        results[kind] = measure(kind)
        results[kind]["ratios"] = ratios(results[kind], results["tutorial"])
        log(f"{kind}: {json.dumps(results[kind])}")
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    log(f"drew {plot.draw(results, RESULTS / 'bench.png')}")
    print(table(results))
    print(costs_table(results))
    log(f"wrote {RESULTS / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
