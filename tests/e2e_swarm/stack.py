"""The swarm stack as the tests see it: its deployer, its services, their running tasks'
containers, its database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.models.containers
import docker.models.services

from deploy import Deployed
from tests.e2e.stack import DeployedStack


@dataclass
class SwarmStack(DeployedStack):
    # Config keys every later `up` keeps, as `pulumi config set` persists them.
    overrides: dict[str, str] = field(default_factory=dict)

    def up(
        self,
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> Deployed:
        return super().up({**self.overrides, **(config or {})}, secrets, check=check)

    def configure(self, **changes: str) -> Deployed:
        """`pulumi config set` for each change, then `up`."""
        self.overrides.update(changes)
        return self.up()

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

    def psql(self, sql: str) -> str:
        """Run SQL in the postgres task's container (its own socket: nothing is published)."""
        (postgres,) = self.task_containers("postgres")
        exit_code, output = postgres.exec_run(
            ["psql", "-U", "taskstack", "-d", "taskstack", "-v", "ON_ERROR_STOP=1", "-Atc", sql]
        )
        text = str(output.decode())
        assert exit_code == 0, text
        return text.strip()
