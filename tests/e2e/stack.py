"""A deployed stack as the end-to-end tests see it (the rehearsal's, or with DEPLOYER=pulumi a real
`pulumi up`'s), and the helpers the suites share."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import docker
import docker.errors
import docker.models.containers
import httpx

from deploy import Deployed, Deployer
from deploy.base import ARTIFACTS as ARTIFACTS  # the suites write their reports there too
from rehearsal.stack_config import read_rehearsal_secrets

# A worker's log line for a finished job (Celery's own format); group 1 is the job id.
SUCCEEDED_LINE = re.compile(r"Task app\.tasks\.process_data\[([0-9a-f-]{36})\] succeeded")
T = TypeVar("T")


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


@dataclass
class DeployedStack:
    """A stack as the end-to-end tests see it: brought up and down by a deployer (deploy/), the
    outputs of its last successful `up`, its containers, its database, its URLs."""

    deployer: Deployer
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.deployer.name

    def up(
        self,
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> Deployed:
        deployed = self.deployer.up(config, secrets, check=check)
        if deployed.ok:
            self.outputs = self.deployer.outputs()
        return deployed

    def down(self, *, volumes: bool = False) -> None:
        self.deployer.down(volumes=volumes)

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
        return self.deployer.containers()

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
        # Generated on first use by either deployer (rehearsal/stack_config.py).
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
