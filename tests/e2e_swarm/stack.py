"""The rehearsed swarm stack as the tests see it: the CLI that brings it up, its services, their
running tasks' containers, its database."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.models.containers
import docker.models.services

from tests.e2e.stack import RehearsedStack


@dataclass
class SwarmStack(RehearsedStack):
    base: str = "swarm"
    # `--config` overrides every later `up` keeps, as `pulumi config set` persists them.
    overrides: dict[str, str] = field(default_factory=dict)

    def up(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        configured = [
            arg for key, value in self.overrides.items() for arg in ("--config", f"{key}={value}")
        ]
        return super().up(*configured, *extra, check=check)

    def configure(self, **changes: str) -> subprocess.CompletedProcess[str]:
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
