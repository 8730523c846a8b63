"""A rehearsed stack as the end-to-end tests see it: the CLI that brings it up, its containers, its
database, its URLs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.models.containers
import httpx

from rehearsal.runner import REPO_ROOT
from rehearsal.stack_config import read_rehearsal_secrets

ARTIFACTS = REPO_ROOT / "artifacts"
# A worker's log line for a finished job (Celery's own format); group 1 is the job id.
SUCCEEDED_LINE = re.compile(r"Task app\.tasks\.process_data\[([0-9a-f-]{36})\] succeeded")
T = TypeVar("T")


def rehearse(
    *args: str, check: bool = True, timeout: int = 1200
) -> subprocess.CompletedProcess[str]:
    """`python -m rehearsal ...`, as `make rehearse` runs it."""
    completed = subprocess.run(
        [sys.executable, "-m", "rehearsal", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"rehearsal {' '.join(args[:3])} failed ({completed.returncode}):\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-8000:]}"
        )
    return completed


def eventually(probe: Callable[[], T | None], *, within: float, every: float = 1.0) -> T:
    """The first truthy result of `probe`, polling; fails after `within` seconds (a generous bound
    for something that must happen, not a performance assertion)."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:.0f}s: {probe.__doc__ or probe}")
        time.sleep(every)


def reported_changes(completed: subprocess.CompletedProcess[str]) -> list[str]:
    """The steps an `up` reports (`changes: N`, then one line per create, update, replace or
    delete, from the diff against the read-back state: docs/rehearsal.md)."""
    lines = completed.stdout.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.strip().startswith("changes: ")]
    count = int(lines[index].split(":")[1])
    steps = [line.strip() for line in lines[index + 1 : index + 1 + count]]
    assert len(steps) == count, completed.stdout
    return steps


@dataclass
class RehearsedStack:
    base: str  # dev or prod: the Pulumi.<base>.yaml the rehearsal reads
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"rehearsal-{self.base}"

    @property
    def outputs_file(self) -> Path:
        return ARTIFACTS / f"{self.name}-outputs.json"

    def up(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = rehearse(
            "up",
            "--stack",
            self.base,
            "--outputs-json",
            str(self.outputs_file),
            *extra,
            check=check,
        )
        if completed.returncode == 0:
            self.outputs = json.loads(self.outputs_file.read_text())
        return completed

    def down(self, *, volumes: bool = False) -> None:
        rehearse("down", "--stack", self.base, *(["--volumes"] if volumes else []))

    @property
    def api_url(self) -> str:
        return str(self.outputs["apiUrl"])

    @property
    def flower_url(self) -> str:
        return str(self.outputs["flowerUrl"])

    @property
    def image_name(self) -> str:
        return str(self.outputs["imageName"])

    def names(self, role: str) -> list[str]:
        return [str(name) for name in self.outputs["containerNames"][role]]

    def container(self, name: str) -> docker.models.containers.Container:
        return docker.from_env().containers.get(name)

    def logs(self, name: str) -> str:
        return str(self.container(name).logs().decode(errors="replace"))

    def all_containers(self) -> list[docker.models.containers.Container]:
        return list(
            docker.from_env().containers.list(
                all=True, filters={"label": f"com.taskstack.stack={self.name}"}
            )
        )

    def psql(self, sql: str) -> str:
        """Run SQL in the postgres container (its own socket: nothing published is needed)."""
        postgres = self.container(self.names("postgres")[0])
        exit_code, output = postgres.exec_run(
            ["psql", "-U", "taskstack", "-d", "taskstack", "-v", "ON_ERROR_STOP=1", "-Atc", sql]
        )
        text = str(output.decode())
        assert exit_code == 0, text
        return text.strip()

    def submit_jobs(self, count: int, first_item: int) -> list[str]:
        """POST /process for `count` items from `first_item` on; the task ids, all answered 202."""

        def post(item_id: int) -> str:
            with httpx.Client(base_url=self.api_url, timeout=30) as client:
                response = client.post(f"/process/{item_id}")
                assert response.status_code == 202, response.text
                return str(response.json()["task_id"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(post, range(first_item, first_item + count)))

    def job_statuses(self, ids: list[str]) -> dict[str, int]:
        """How many of these jobs are in each status, read from the database."""
        statuses: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            listed = ",".join(f"'{uuid.UUID(job_id)}'" for job_id in ids[start : start + 500])
            # Every id went through uuid.UUID: nothing but hex digits and dashes reaches the SQL.
            rows = self.psql(
                f"SELECT status, count(*) FROM jobs WHERE id IN ({listed}) GROUP BY status"  # noqa: S608
            )
            for row in rows.splitlines():
                status, count = row.split("|")
                statuses[status] = statuses.get(status, 0) + int(count)
        return statuses

    def flower_auth(self) -> tuple[str, str]:
        secrets = read_rehearsal_secrets(self.name)
        user, _, password = secrets["taskstack:flowerBasicAuth"].partition(":")
        return user, password

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def submit_and_wait(self, item_id: int, *, within: float = 120) -> dict[str, Any]:
        """The tutorial: POST /process/{id}, then GET /task/{task_id} until SUCCESS."""
        with self.api() as client:
            accepted = client.post(f"/process/{item_id}")
            assert accepted.status_code == 202, accepted.text
            task_id = accepted.json()["task_id"]

            def succeeded() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get(f"/task/{task_id}").json()
                assert body["status"] != "FAILURE", body
                return body if body["status"] == "SUCCESS" else None

            return eventually(succeeded, within=within)
