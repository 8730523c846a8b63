"""Overload and slow clients on the rehearsed prod stack (RELIABILITY.md, "Overload").

`python -m bench.overload` (needs the engine lock, Docker, the base images and wrk):

1. brings the prod stack up as `bench-prod` (bench/run.py's `Stack`: its own name and ports,
   JOB_WORK_SECONDS=0), creates 1,000 jobs and waits until they finished;
2. for GET /jobs?limit=500, GET /task/{id} (a finished job) and POST /process/{n}, at 500, 800 and
   1,000 connections: `wrk -t2 -c<N> -d<D>s --timeout 10s` through the published port (the proxy),
   answers counted by status (bench/status.lua), socket errors (dropped connections) and timeouts;
   meanwhile each API container's memory is sampled every 0.25 s from its cgroup (usage minus
   inactive file cache, as `docker stats` shows it); after the run, 20 s of quiet, then memory
   again; restarts: the containers' RestartCount and OOMKilled, the cgroup's `oom_kill` counter
   (a uvicorn child killed by the kernel) and uvicorn's "Child process ... died" lines;
3. slow clients: 1,000 connections that send a request's headers (then a body) one line (byte)
   every 2 s, for at most 60 s, through the proxy and straight to one API copy: how many the
   server cut off, and after how long;
4. prints the results as JSON lines and writes bench/results/overload.json; removes the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.run import PORTS, REPO, RESULTS, Stack, log, wait_until

STATUS_LUA = REPO / "bench" / "status.lua"
CONNECTIONS = (500, 800, 1000)
DURATION = int(os.environ.get("OVERLOAD_SECONDS", "30"))
QUIET_SECONDS = 20
SLOW_CLIENTS = 1000
SLOW_SECONDS = 60
SLOW_INTERVAL = 2.0
CGROUP = Path("/sys/fs/cgroup/memory/docker")


def _memory(container_id: str) -> int:
    """Bytes in use by the container, without inactive file cache (as `docker stats`)."""
    base = CGROUP / container_id
    usage = int((base / "memory.usage_in_bytes").read_text())
    stats = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
    return usage - int(stats.get("total_inactive_file", 0))


def _oom_kills(container_id: str) -> int:
    fields = dict(
        line.split()
        for line in (CGROUP / container_id / "memory.oom_control").read_text().splitlines()
    )
    return int(fields.get("oom_kill", 0))


class MemorySampler:
    """Each API container's peak memory while the load runs."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.peak = dict.fromkeys(ids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for container_id in self.ids:
                self.peak[container_id] = max(self.peak[container_id], _memory(container_id))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _mib(value: float) -> float:
    return round(value / 1024 / 1024, 1)


def _raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wrk(url: str, path: str, connections: int) -> dict[str, Any]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{DURATION}s", "--timeout", "10s"]
    completed = subprocess.run(
        [*command, "-s", str(STATUS_LUA), url],
        env=os.environ | {"OVERLOAD_PATH": path},
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_raise_file_limit,  # wrk needs a descriptor per connection
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("OVERLOAD-JSON ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed: {completed.stdout}\n{completed.stderr}")
    result: dict[str, Any] = json.loads(lines[0].removeprefix("OVERLOAD-JSON "))
    return result


def _restarts(stack: Stack) -> dict[str, Any]:
    apis = stack.containers("api")
    died = sum(
        line.startswith("INFO:") and "Child process [" in line and line.endswith("died")
        for api in apis
        for line in api.logs().decode(errors="replace").splitlines()
    )
    every = [
        c
        for role in ("api", "worker", "beat", "flower", "proxy", "postgres", "redis")
        for c in stack.containers(role)
    ]
    for container in every:
        container.reload()
    return {
        "restart_count": sum(int(c.attrs["RestartCount"]) for c in every),
        "oom_killed_containers": [c.name for c in every if c.attrs["State"]["OOMKilled"]],
        "oom_kills_in_cgroups": sum(_oom_kills(c.id) for c in every),
        "uvicorn_children_died": died,
    }


def overload_run(stack: Stack, path: str, connections: int) -> dict[str, Any]:
    apis = stack.containers("api")
    ids = [api.id for api in apis]
    before = {i: _memory(i) for i in ids}
    restarts_before = _restarts(stack)
    log(f"wrk {path} -c{connections} -d{DURATION}s")
    with MemorySampler(ids) as sampler:
        result = _wrk(stack.api_url, path, connections)
    time.sleep(QUIET_SECONDS)
    after = {i: _memory(i) for i in ids}
    restarts_after = _restarts(stack)
    statuses = {int(k): v for k, v in result.pop("statuses").items()}
    return {
        "path": path,
        "connections": connections,
        "seconds": DURATION,
        "answers": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "5xx": {code: n for code, n in statuses.items() if code >= 500},
        "dropped": result["connect_errors"] + result["read_errors"] + result["write_errors"],
        "timeouts": result["timeouts"],
        "p50_ms": round(result["p50_us"] / 1000, 1),
        "p99_ms": round(result["p99_us"] / 1000, 1),
        "api_memory_mib": [
            {
                "before": _mib(before[i]),
                "peak": _mib(sampler.peak[i]),
                "after_quiet": _mib(after[i]),
            }
            for i in ids
        ],
        "new_restarts": {
            key: (restarts_after[key] - restarts_before[key])
            if isinstance(restarts_after[key], int)
            else restarts_after[key]
            for key in restarts_after
        },
    }


async def _slow_client(host: str, port: int, payload: list[bytes]) -> float | None:
    """Sends `payload` one piece every SLOW_INTERVAL s; the seconds until the server closed the
    connection (or answered), None if it was still open after SLOW_SECONDS."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0.0
    try:
        for piece in payload:
            writer.write(piece)
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), SLOW_INTERVAL)
            except TimeoutError:
                if time.monotonic() - started > SLOW_SECONDS:
                    return None
                continue
            return time.monotonic() - started if data is not None else None
        return None
    except OSError:
        return time.monotonic() - started
    finally:
        writer.close()


def _trickle_headers() -> list[bytes]:
    pieces = [b"GET /health HTTP/1.1\r\n", b"Host: overload\r\n"]
    return pieces + [f"X-Slow-{n}: 1\r\n".encode() for n in range(1000)]


def _trickle_body() -> list[bytes]:
    head = (
        b"POST /notifications HTTP/1.1\r\nHost: overload\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    return [head] + [b" "] * 1000


async def _slow_clients(host: str, port: int, payload: list[bytes]) -> dict[str, Any]:
    results = await asyncio.gather(
        *(_slow_client(host, port, payload) for _ in range(SLOW_CLIENTS))
    )
    cut = sorted(r for r in results if r is not None)
    return {
        "clients": SLOW_CLIENTS,
        "cut_off": len(cut),
        "still_open_after_s": SLOW_SECONDS if len(cut) < SLOW_CLIENTS else None,
        "cut_off_p50_s": round(statistics.median(cut), 1) if cut else None,
        "cut_off_max_s": round(cut[-1], 1) if cut else None,
    }


def slow_runs(stack: Stack) -> list[dict[str, Any]]:
    _raise_file_limit()
    proxy_port = PORTS[stack.kind]["apiPort"]
    api_host = stack.api_addresses()[0].removeprefix("http://").rsplit(":", 1)[0]
    runs = []
    for target, host, port in (("proxy", "127.0.0.1", proxy_port), ("api copy", api_host, 8000)):
        for kind, payload in (("headers", _trickle_headers()), ("body", _trickle_body())):
            log(f"{SLOW_CLIENTS} slow clients trickling {kind} to the {target}")
            result = asyncio.run(_slow_clients(host, port, payload))
            runs.append({"target": target, "trickling": kind, **result})
            time.sleep(5)
    return runs


def seed(stack: Stack) -> str:
    """1,000 finished jobs (a full page for /jobs?limit=500); one of their ids."""
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        ids = [client.post(f"/process/{n}").json()["task_id"] for n in range(1000)]
    wait_until(stack, "SELECT count(*) FROM jobs WHERE status = 'succeeded'", 1000, 120)
    return str(ids[0])


def main() -> int:
    stack = Stack("prod")
    stack.down()
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        stack.up()
        task_id = seed(stack)
        results["shape"] = stack.shape()
        runs = []
        for path in ("/jobs?limit=500", f"/task/{task_id}", "POST /process"):
            for connections in CONNECTIONS:
                run = overload_run(stack, path, connections)
                print(json.dumps(run), flush=True)
                runs.append(run)
        results["overload"] = runs
        results["slow_clients"] = slow_runs(stack)
        for run in results["slow_clients"]:
            print(json.dumps(run), flush=True)
        results["restarts_total"] = _restarts(stack)
    finally:
        stack.down()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overload.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
