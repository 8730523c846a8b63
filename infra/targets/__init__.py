"""Renderers: one `StackDescription`, one rendering per target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from infra.spec import Role, StackDescription


@dataclass(frozen=True)
class Rendered:
    """What a target hands back for the stack outputs: the app image and each role's names
    (containers on docker, services on swarm)."""

    image_name: pulumi.Output[str]
    image_id: pulumi.Output[str]
    names: Mapping[Role, Sequence[pulumi.Output[str]]]
    # docker: the run label of the migration that passed (docs/infra.md, "A failed migration").
    migration_run: pulumi.Output[str] | None = None


def render(description: StackDescription) -> Rendered:
    if description.target == "docker":
        from infra.targets import docker

        stack = docker.render(description)
        return Rendered(
            image_name=stack.app_image.image.image_name,
            image_id=stack.app_image.image_id,
            names={role: [c.name for c in cs] for role, cs in stack.containers.items()},
            migration_run=stack.migration_run,
        )
    if description.target == "swarm":
        from infra.targets import swarm

        services = swarm.render(description)
        return Rendered(
            image_name=services.app_image.image.image_name,
            image_id=services.app_image.image_id,
            names={role: [service.name] for role, service in services.services.items()},
        )
    raise pulumi.RunError(f"unknown target {description.target!r}")
