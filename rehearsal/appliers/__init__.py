"""Each pulumi-docker resource type applied to the Docker engine as the provider would apply it:
`dispatch` picks the applier by type; an applier takes the `Deployment` and the registration and
returns the resource's id and computed outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rehearsal.engine import SEQUENCE_LABEL, STACK_LABEL, URN_LABEL, exists, label_list_to_dict
from rehearsal.runner import Registration
from rehearsal.state import AppliedResource, StackState, inputs_digest

Result = tuple[str, dict[str, Any]]


class Change(NamedTuple):
    """One step the engine took: create, update (in place), replace or delete, and the properties
    whose diff against the read-back state caused it."""

    op: str
    urn: str
    properties: list[str]


@dataclass
class Deployment:
    """One `up` as the appliers see it: the stack, its state, what the engine did."""

    stack: str
    state: StackState
    log: Callable[[str], None] = print
    # The steps of this `up` (a no-op `up` has none).
    changes: list[Change] = field(default_factory=list)
    # Replaced create-before-delete: deleted once the program has run, as Pulumi deletes replaced
    # resources at the end of a deployment.
    superseded: list[AppliedResource] = field(default_factory=list)

    def note(self, op: str, urn: str, properties: Sequence[str] = ()) -> None:
        self.changes.append(Change(op, urn, list(properties)))

    def labels(self, resource: Registration, sequence: int) -> dict[str, str]:
        """The program's labels plus the rehearsal's own: stack, URN, creation order."""
        own = label_list_to_dict(resource.plain.get("labels"))
        return {
            **own,
            STACK_LABEL: self.stack,
            URN_LABEL: resource.urn,
            SEQUENCE_LABEL: str(sequence),
        }

    def unchanged(
        self, resource: Registration, inspect: Callable[[str], object]
    ) -> AppliedResource | None:
        """The recorded resource when its inputs did not change and the engine still has it (a
        no-op), else None."""
        recorded = self.state.get(resource.urn)
        if recorded is None or recorded.digest != inputs_digest(resource.plain):
            return None
        return recorded if not recorded.tainted and exists(inspect, recorded.id) else None

    def make_way(
        self, urn: str, delete: Callable[[AppliedResource], object], *, delete_first: bool = True
    ) -> None:
        """Make way for a new resource at `urn` in the engine's order: delete before replace, the
        old resource goes now; create before delete, it goes once the whole deployment has been
        applied (`stack.up` deletes `superseded` last, as the engine's step generator does)."""
        recorded = self.state.get(urn)
        if recorded is None:
            return
        if delete_first or recorded.tainted:
            self.log(f"  replacing {urn} (delete before create)")
            delete(recorded)
        else:
            self.log(f"  replacing {urn} (create before delete)")
            self.superseded.append(recorded)
        self.state.forget(urn)

    def record(
        self, resource: Registration, resource_id: str, name: str, sequence: int, **extra: Any
    ) -> AppliedResource:
        """Record what was applied for `resource` (computed `outputs`, `delete` settings...)."""
        digest = inputs_digest(resource.plain)
        applied = AppliedResource(
            resource.urn, resource.type, resource_id, name, digest, sequence, **extra
        )
        self.state.record(applied)
        return applied
