"""What a rehearsal applied, per stack: the rehearsal's stand-in for Pulumi's state file.

One JSON file per stack under `.pulumi-state/rehearsal/` (git-ignored). It records, in creation
order, each resource's URN, engine id, a digest of its inputs, its computed outputs, one digest per
property of what the provider's Read wrote back (rehearsal/readback.py: the next `up` diffs against
it) and the non-secret stack outputs of the last successful `up`. Inputs themselves are never
written: they carry secrets.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rehearsal.engine import STATE_DIR


def inputs_digest(inputs: dict[str, Any]) -> str:
    """A stable digest of a registration's inputs, to tell a no-op from a replacement."""
    encoded = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


@dataclass
class AppliedResource:
    urn: str
    type: str
    id: str
    physical_name: str
    digest: str
    sequence: int
    # Computed outputs only (exitCode, containerLogs, imageId...): never the inputs.
    outputs: dict[str, Any] = field(default_factory=dict)
    # What delete needs, as the provider reads it from state: destroyGraceSeconds, attach,
    # removeVolumes...
    delete: dict[str, Any] = field(default_factory=dict)
    # A create that failed half way (the container exists but never became healthy): replaced next
    # time, as Pulumi replaces a resource whose create reported an error after the object came into
    # being.
    tainted: bool = False
    # Services: a digest of the inputs whose change replaces rather than updates (ForceNew).
    replace_key: str = ""
    # Containers and services: one digest per property of what the provider's Read wrote back
    # (rehearsal/readback.py); the next `up` diffs its new inputs against these, as the engine does.
    readback: dict[str, str] = field(default_factory=dict)


class StackState:
    def __init__(self, stack: str, directory: Path = STATE_DIR) -> None:
        self.stack = stack
        self.path = directory / f"{stack}.json"
        self._lock = threading.Lock()
        self._resources: dict[str, AppliedResource] = {}
        self._next_sequence = 1
        # The non-secret stack outputs of the last successful `up` (what a StackReference reads).
        self.stack_outputs: dict[str, Any] = {}
        if self.path.exists():
            document = json.loads(self.path.read_text())
            for raw in document["resources"]:
                resource = AppliedResource(**raw)
                self._resources[resource.urn] = resource
            self._next_sequence = int(document["next_sequence"])
            self.stack_outputs = dict(document["stack_outputs"])

    def take_sequence(self) -> int:
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
            self._save_locked()
            return sequence

    def get(self, urn: str) -> AppliedResource | None:
        with self._lock:
            return self._resources.get(urn)

    def record(self, resource: AppliedResource) -> None:
        with self._lock:
            self._resources[resource.urn] = resource
            self._save_locked()

    def forget(self, urn: str) -> None:
        with self._lock:
            self._resources.pop(urn, None)
            self._save_locked()

    def record_stack_outputs(self, outputs: dict[str, Any]) -> None:
        with self._lock:
            self.stack_outputs = dict(outputs)
            self._save_locked()

    def resources(self) -> list[AppliedResource]:
        """Every recorded resource, in creation order."""
        with self._lock:
            return sorted(self._resources.values(), key=lambda resource: resource.sequence)

    def _save_locked(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "stack": self.stack,
            "next_sequence": self._next_sequence,
            "stack_outputs": self.stack_outputs,
            "resources": [asdict(resource) for resource in self._resources.values()],
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
        os.replace(temporary, self.path)
