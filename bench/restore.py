"""`python -m bench.restore`: how long a restore takes (RTO), at 10,000 and 100,000 jobs
(RELIABILITY.md, "Point-in-time recovery").

For each size, on a fresh prod stack (the rehearsal, or DEPLOYER=pulumi): the jobs table filled
to that many rows (one INSERT of finished jobs, as a day's work leaves them), everything archived,
a full backup taken (as the schedule would have), then the database's container, its volume and
the backup role removed; timed from the restore's `up` (`restoreTarget latest`) to the API
answering ready, and the repository's size. Writes bench/results/restore-<date>.json.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx

from deploy import deployer
from deploy.stack import DeployedStack, eventually
from infra.spec.backup import PGDATA, REPOSITORY_DIR

SIZES = (10_000, 100_000)
RESULTS = Path(__file__).resolve().parent / "results"
# Host ports clear of the suites' and `make bench`'s stacks.
PORTS = {"apiPort": "18600", "flowerPort": "16155", "prometheusPort": "18690"}
PORTS |= {"alertmanagerPort": "18693"}


def log(message: str) -> None:
    print(f"[restore {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


FILL = (
    "INSERT INTO jobs (id, item_id, status, attempts, progress, result, celery_task_id, "
    "started_at, finished_at) "
    "SELECT id, n, 'succeeded', 1, 100, jsonb_build_object('item_id', n, 'status', 'processed'), "
    "id::text, now(), now() "
    "FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, {jobs}) AS n) AS s"
)


def fill(stack: DeployedStack, jobs: int) -> None:
    stack.psql(FILL.format(jobs=int(jobs)))


def backed_up(stack: DeployedStack) -> None:
    """Everything archived, and a full backup that holds it, as the schedule leaves a day."""
    backup = stack.container(stack.names("backup")[0])
    result = backup.exec_run(["pgbackrest", "backup", "--type=full"])
    assert result.exit_code == 0, result.output.decode()
    stack.psql("SELECT pg_switch_wal()", user="postgres")

    def archived() -> bool:
        """nothing waits to be archived"""
        ready = "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
        return stack.psql(ready) == "0"

    eventually(archived, within=300)


def lose_database(stack: DeployedStack) -> int:
    """The database's container, its volume and the backup role gone; the repository's bytes."""
    client = docker.from_env()
    backup = stack.container(stack.names("backup")[0])
    size = backup.exec_run(["du", "-sb", REPOSITORY_DIR]).output.decode().split()[0]
    postgres = stack.data_container("postgres")
    (volume,) = [m["Name"] for m in postgres.attrs["Mounts"] if m["Destination"] == PGDATA]
    postgres.remove(force=True)
    backup.remove(force=True)
    client.volumes.get(volume).remove(force=True)
    return int(size)


def measure(jobs: int) -> dict[str, Any]:
    stack = DeployedStack(deployer("prod", "bench-restore", echo=True))
    stack.down(volumes=True)
    try:
        assert stack.up(PORTS).ok
        fill(stack, jobs)
        backed_up(stack)
        repository_bytes = lose_database(stack)
        log(f"{jobs:,} jobs: database lost; restoring to latest")
        started = time.monotonic()
        deployed = stack.up({**PORTS, "restoreTarget": "latest"})
        assert deployed.ok, deployed.log[-2000:]

        def ready() -> bool:
            """the API answers ready on the restored database"""
            try:
                return httpx.get(f"{stack.api_url}/health/ready", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, within=1800, every=0.5)
        seconds = round(time.monotonic() - started, 1)
        restored = int(stack.psql("SELECT count(*) FROM jobs"))
        assert restored == jobs, (restored, jobs)
        log(f"{jobs:,} jobs: restored in {seconds}s")
        return {"jobs": jobs, "rto_seconds": seconds, "repository_bytes": repository_bytes}
    finally:
        stack.down(volumes=True)


def main() -> int:
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.restore",
        "host": platform.node(),
        "runs": [measure(jobs) for jobs in SIZES],
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"restore-{datetime.now(UTC).strftime('%Y-%m-%d-%H%M')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
