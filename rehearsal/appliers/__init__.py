"""Each pulumi-docker resource type applied to the Docker engine as the provider would apply it.

`dispatch` is the engine the program talks to (`EngineMocks`: picks the applier by resource type,
deletes a recorded resource by its type); `docker` applies the single-host resources (networks,
volumes, images, containers), `swarm` the Swarm ones (services, secrets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rehearsal.state import AppliedResource, StackState


@dataclass(frozen=True)
class Change:
    """One step the engine would take: create, update (in place), replace or delete, and the
    properties whose diff against the read-back state caused it."""

    op: str
    urn: str
    properties: list[str] = field(default_factory=list)


class ApplyContext(Protocol):
    """What an applier needs from the engine (`EngineMocks`)."""

    stack: str
    state: StackState
    log: Callable[[str], None]
    # Replaced create-before-delete (secrets, services): deleted once the program has run.
    superseded: list[AppliedResource]
    # The steps of this `up` (a no-op `up` has none).
    changes: list[Change]
