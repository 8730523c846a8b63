"""Private PostgreSQL and Redis servers and the app's real processes, started by the fault tests.

Each fault is injected into servers these tests own (their own port, data directory and process),
never into the machine's shared PostgreSQL or Redis.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous: a noisy two-core machine running a worker, beat, the API and two servers at once.
START_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until(
    condition: Callable[[], bool], seconds: float, what: str, interval: float = 0.1
) -> float:
    """Poll `condition` until it holds; returns the time waited. Fails naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(interval)
    return time.monotonic() - started


def stop_process(process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `seconds`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def children_of(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(child) for child in task.read_text().split())
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


class PrivateRedis:
    """`redis-server` on a free port with an append-only file, so a stop/start keeps the queue."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--dir", str(self.directory), "--save", ""),
                    # Every write on disk before it is acknowledged: a stop loses no message.
                    *("--appendonly", "yes", "--appendfsync", "always"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.answers, START_SECONDS, f"redis on {self.port} answers PING")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits (`docker stop`)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no flush at exit (`docker kill`); what reached the append-only file stays."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
            connection.sendall(b"FLUSHALL\r\n")
            assert connection.recv(16).startswith(b"+OK")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb), run as the `postgres` OS user on a free port."""

    def __init__(self, directory: Path) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major_version)
        if not binaries:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(binaries[-1])
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = free_port()

    def _as_postgres(self, *command: str) -> None:
        as_user: tuple[str, ...] = ("runuser", "-u", "postgres", "--") if os.getuid() == 0 else ()
        subprocess.run([*as_user, *command], check=True, capture_output=True)

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            # The server runs as `postgres`: it must reach (and own) its directory.
            self.directory.chmod(0o755)
            for parent in self.directory.parents:
                if parent == Path(parent.anchor) or parent.stat().st_mode & 0o001:
                    break
                parent.chmod(parent.stat().st_mode | 0o001)
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"),
            *("-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"),
        )

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_SECONDS)),
            *extra,
            action,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            # Durability against an OS crash is not what these tests measure.
            "-c fsync=off -c max_connections=200"
        )
        self._pg_ctl("start", "-o", options)

    def restart(self) -> None:
        """Fast shutdown (open sessions are terminated) and start again: a server restart."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "immediate")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, statement: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(statement.encode())


def _major_version(path: str) -> int:
    return int(Path(path).parent.name)


class AppProcesses:
    """The app's roles as real subprocesses (the commands of docs/architecture.md)."""

    def __init__(self, directory: Path, env: Mapping[str, str]) -> None:
        self.directory = directory
        self.env = dict(env)
        self.api_port = free_port()
        self.started: list[subprocess.Popen[bytes]] = []
        self.orphans: list[int] = []

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (self.directory / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=REPO_ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self, name: str = "api") -> subprocess.Popen[bytes]:
        process = self._spawn(
            name,
            [
                *(sys.executable, "-m", "uvicorn", "app.main:app"),
                *("--host", "127.0.0.1", "--port", str(self.api_port), "--no-access-log"),
            ],
        )

        def live() -> bool:
            assert process.poll() is None, self.log(name)[-3000:]
            try:
                return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, START_SECONDS, "the API answers /health")
        return process

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """A prefork worker with two children; returns once its consumer is connected."""
        heartbeat = self.directory / f"{name}.heartbeat"
        heartbeat.unlink(missing_ok=True)
        self.env["WORKER_HEARTBEAT_PATH"] = str(heartbeat)
        process = self._spawn(
            name,
            [
                *(sys.executable, "-m", "celery", "-A", "app.worker", "worker"),
                *("--loglevel=INFO", "--concurrency=2", f"--hostname={name}@%h"),
            ],
        )

        def consuming() -> bool:
            assert process.poll() is None, self.log(name)[-3000:]
            return heartbeat.exists()

        wait_until(consuming, START_SECONDS, f"worker {name} consumes")
        return process

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        return self._spawn(
            name,
            [sys.executable, "-m", "celery", "-A", "app.worker", "beat", "--loglevel=INFO"],
        )

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop_process(process)
        for pid in self.orphans:
            # Pool children left behind by a SIGKILLed parent: ours, killed by their id.
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Stack:
    """One scenario's servers, database and processes (the `stack` fixture)."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    processes: AppProcesses
    database: str

    @property
    def dsn(self) -> str:
        return self.postgres.dsn(self.database)
