"""What a deployer does for the suites and the bench: up, down, the stack's outputs and its
containers. The stack's containers are found by the program's own labels, whoever applied it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import docker.models.containers

from infra.spec import LABEL_ROLE, LABEL_STACK

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "artifacts"


class DeployError(RuntimeError):
    """An `up` or `down` that failed (with what the deployer printed), or a deployer that cannot
    start."""


@dataclass(frozen=True)
class Deployed:
    """What an `up` did: whether it succeeded, the steps it took (`create|update|replace|delete
    URN`, then the properties whose diff caused it in parentheses; none when nothing changed), and
    what the deployer printed."""

    ok: bool
    changes: list[str] = field(default_factory=list)
    log: str = ""


class Deployer(ABC):
    """One stack: `stack` names the stack files read (dev, prod, swarm, swarm3), `name` is the
    stack name the program sees (its resource names and labels carry it)."""

    def __init__(self, stack: str, name: str, *, echo: bool = False) -> None:
        self.stack = stack
        self.name = name
        self.echo = echo

    @abstractmethod
    def up(
        self,
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> Deployed:
        """Bring the stack to what the program registers with the stack files' configuration plus
        `config` and `secrets` for this `up` only (as `pulumi config set [--secret]`; a key without
        a `project:` prefix is the project's). `check`: a failed `up` raises DeployError."""

    @abstractmethod
    def down(self, *, volumes: bool = False, check: bool = True) -> None:
        """Delete the stack; its named volumes (its data) stay unless `volumes`."""

    @abstractmethod
    def outputs(self) -> dict[str, Any]:
        """The stack's non-secret outputs, as the last `up` left them."""

    @cached_property
    def engine(self) -> docker.DockerClient:
        """The engine the stack runs on (DOCKER_HOST, as the provider finds it)."""
        return docker.from_env()

    def containers(self, role: str | None = None) -> list[docker.models.containers.Container]:
        """The stack's containers (stopped ones too), or the role's: by the program's labels."""
        labels = [f"{LABEL_STACK}={self.name}", *([f"{LABEL_ROLE}={role}"] if role else [])]
        return list(self.engine.containers.list(all=True, filters={"label": labels}))
