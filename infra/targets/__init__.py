"""Renderers: one `StackDescription`, one rendering per target (infra/targets/core.py: what they
share)."""

from __future__ import annotations

import pulumi

from infra.spec import StackDescription
from infra.targets.core import Rendered


def render(description: StackDescription) -> Rendered:
    if description.target == "docker":
        from infra.targets import docker

        return docker.render(description)
    if description.target == "swarm":
        from infra.targets import swarm

        return swarm.render(description)
    raise pulumi.RunError(f"unknown target {description.target!r}")
