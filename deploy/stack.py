"""A deployed stack as the end-to-end tests see it (the rehearsal's, or with DEPLOYER=pulumi a real
`pulumi up`'s), and the helpers the suites share."""

from __future__ import annotations

import io
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

import docker
import docker.errors
import docker.models.containers
import docker.models.services
import httpx

from app.worker import liveness
from deploy import Deployed, Deployer
from deploy.base import ARTIFACTS as ARTIFACTS  # the suites write their reports there too
from infra.spec import LABEL_ROLE, SECRETS_DIR
from infra.targets.docker_secrets import SECRETS_ROLE_SUFFIX
from rehearsal.stack_config import read_rehearsal_secrets

# A worker's log line for a finished job (Celery's own format); group 1 is the job id.
SUCCEEDED_LINE = re.compile(r"Task app\.tasks\.process_data\[([0-9a-f-]{36})\] succeeded")
T = TypeVar("T")

JOB_HISTORY_COLUMNS = "status, attempts, created_at, queued_at, started_at, finished_at, error"
# Where a job's message is in the broker (app/worker/liveness.py's keys): on a queue (with its
# index),
# or in kombu's unacknowledged hash, held by which consumer channels, alive or dead.
BROKER_LOCATION = """
local id, prefix, found = ARGV[1], ARGV[2], {}
for _, queue in ipairs({'celery', 'maintenance'}) do
  for index, message in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    if string.find(message, id, 1, true) then
      table.insert(found, queue .. '[' .. (index - 1) .. ']')
    end
  end
end
local unacked = redis.call('HGETALL', 'unacked')
for i = 1, #unacked, 2 do
  if string.find(unacked[i + 1], id, 1, true) then
    local holders = {}
    for _, channel in ipairs(redis.call('SMEMBERS', prefix .. 'channels')) do
      if redis.call('SISMEMBER', prefix .. 'held:' .. channel, unacked[i]) == 1 then
        local alive = redis.call('EXISTS', prefix .. 'alive:' .. channel) == 1
        table.insert(holders, channel .. (alive and ' (alive)' or ' (dead)'))
      end
    end
    local by = ' held by [' .. table.concat(holders, ', ') .. ']'
    table.insert(found, 'unacked ' .. unacked[i] .. by)
  end
end
if #found == 0 then return 'in no key' end
return table.concat(found, '; ')
"""


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
    # Config keys every later `up` keeps, as `pulumi config set` persists them.
    overrides: dict[str, str] = field(default_factory=dict)

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
        deployed = self.deployer.up({**self.overrides, **(config or {})}, secrets, check=check)
        if deployed.ok:
            self.outputs = self.deployer.outputs()
        return deployed

    def configure(self, **changes: str) -> Deployed:
        """`pulumi config set` for each change, then `up`."""
        self.overrides.update(changes)
        return self.up()

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

    @property
    def headers(self) -> dict[str, str]:
        """What a client of this stack sends: its API key, when the stack has one (the initial key
        a rehearsed prod stack generates, docs/app.md "API keys"); none for dev."""
        key = read_rehearsal_secrets(self.name).get("taskstack:initialApiKey")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def names(self, role: str) -> list[str]:
        return [str(name) for name in self.outputs["containerNames"][role]]

    def container(self, name: str) -> docker.models.containers.Container:
        return docker.from_env().containers.get(name)

    def logs(self, name: str) -> str:
        return str(self.container(name).logs().decode(errors="replace"))

    def all_containers(self) -> list[docker.models.containers.Container]:
        return self.deployer.containers()

    def role_containers(self) -> list[docker.models.containers.Container]:
        """The containers that run a role: without the never-started ones that only hold a
        copy's secret files (infra/targets/docker_secrets.py)."""
        return [
            container
            for container in self.all_containers()
            if not container.labels.get(LABEL_ROLE, "").endswith(SECRETS_ROLE_SUFFIX)
        ]

    def secret_files(self, name: str) -> dict[str, str]:
        """The credentials container `name` reads, by file name: its SECRETS_DIR, read through the
        engine's archive API (no shell needed in the image; a stopped container too)."""
        try:
            stream, _ = self.container(name).get_archive(SECRETS_DIR)
        except docker.errors.NotFound:
            return {}
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            return {
                PurePosixPath(member.name).name: archive.extractfile(member).read().decode()  # type: ignore[union-attr]
                for member in archive.getmembers()
                if member.isfile()
            }

    def data_container(self, role: str) -> docker.models.containers.Container:
        """The container of `postgres` or `redis` (one of each)."""
        return self.container(self.names(role)[0])

    def psql(self, sql: str, *, user: str = "taskstack") -> str:
        """Run SQL in the postgres container (its own socket: nothing published is needed), as
        the app's role, or as `user` (`postgres`, the administrator, for what only it may do)."""
        exit_code, output = self.data_container("postgres").exec_run(
            ["psql", "-U", user, "-d", "taskstack", "-v", "ON_ERROR_STOP=1", "-Atc", sql]
        )
        text = str(output.decode())
        if exit_code != 0:
            raise RuntimeError(f"psql failed: {text}")
        return text.strip()

    def redis_eval(self, script: str, *args: str) -> Any:
        """Run a Lua script in the redis container's redis-cli (the password, if any, from the
        stack's secrets, in the environment rather than on the command line)."""
        password = read_rehearsal_secrets(self.name).get("taskstack:redisPassword", "")
        exit_code, output = self.data_container("redis").exec_run(
            ["redis-cli", "--no-raw", "EVAL", script, "0", *args],
            environment={"REDISCLI_AUTH": password} if password else None,
        )
        text = str(output.decode())
        if exit_code != 0:
            raise RuntimeError(f"redis-cli failed: {text}")
        return text.strip()

    def job_history(self, job_id: str) -> dict[str, Any]:
        """Where a job is: its row's status changes, its outbox row, its message in the broker
        (a queue, or unacknowledged and held by which consumer channel, alive or not)."""
        job = uuid.UUID(job_id)  # nothing but hex digits and dashes reaches the SQL
        return {
            "row": self.psql(f"SELECT {JOB_HISTORY_COLUMNS} FROM jobs WHERE id = '{job}'"),  # noqa: S608
            "outbox": self.psql(
                f"SELECT id, created_at FROM outbox WHERE '{job}' = ANY(task_ids)"  # noqa: S608
            ),
            "broker": self.redis_eval(BROKER_LOCATION, str(job), liveness.PREFIX),
        }

    def submit_jobs(self, count: int, first_item: int) -> list[str]:
        """POST /process for `count` items from `first_item` on; the task ids, all answered 202."""

        def post(item_id: int) -> str:
            with httpx.Client(base_url=self.api_url, headers=self.headers, timeout=30) as client:
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

    def unfinished_jobs(self, ids: list[str]) -> list[str]:
        """The jobs of `ids` not finished yet (neither succeeded nor failed)."""
        unfinished: list[str] = []
        for start in range(0, len(ids), 500):
            listed = ",".join(f"'{uuid.UUID(job_id)}'" for job_id in ids[start : start + 500])
            rows = self.psql(
                f"SELECT id FROM jobs WHERE id IN ({listed}) "  # noqa: S608 - uuids only
                "AND status NOT IN ('succeeded', 'failed')"
            )
            unfinished.extend(rows.split())
        return unfinished

    def flower_auth(self) -> tuple[str, str]:
        # Generated on first use by either deployer (rehearsal/stack_config.py).
        secrets = read_rehearsal_secrets(self.name)
        user, _, password = secrets["taskstack:flowerBasicAuth"].partition(":")
        return user, password

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers=self.headers, timeout=30)

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


@dataclass
class SwarmStack(DeployedStack):
    def service(self, role: str) -> docker.models.services.Service:
        (name,) = self.names(role)
        return docker.from_env().services.get(name)

    def running_tasks(self, role: str) -> list[dict[str, Any]]:
        tasks = self.service(role).tasks(filters={"desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def task_containers(self, role: str) -> list[docker.models.containers.Container]:
        """The containers of the role's running tasks (one node: all on this engine)."""
        client = docker.from_env()
        return [
            client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
            for task in self.running_tasks(role)
        ]

    def data_container(self, role: str) -> docker.models.containers.Container:
        (container,) = self.task_containers(role)
        return container

    def wait_rollouts_settled(self, roles: tuple[str, ...]) -> None:
        """The provider's update convergence counts running tasks: it can return between two
        batches of a rolling update, with every slot running (docs/swarm.md). Wait for Swarm's
        own verdict."""

        def settled() -> bool:
            """every rolling update finished and every replica runs"""
            for role in roles:
                attrs = self.service(role).attrs
                if (attrs.get("UpdateStatus") or {}).get("State") not in (None, "completed"):
                    return False
                replicas = attrs["Spec"]["Mode"]["Replicated"]["Replicas"]
                if len(self.running_tasks(role)) != replicas:
                    return False
            return True

        eventually(settled, within=300, every=2)
