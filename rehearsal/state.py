"""What a rehearsal applied, per stack: its stand-in for Pulumi's state file, one JSON file under
`.pulumi-state/rehearsal/`. Never the inputs: they carry secrets.
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
    # What delete needs, as the provider reads it from state: destroyGraceSeconds, attach...
    delete: dict[str, Any] = field(default_factory=dict)
    # A create that failed half way (never healthy): replaced next time, as Pulumi does.
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
        # What the rehearsal did to make the engine a swarm (appliers/swarm.py `ensure_swarm`).
        self.swarm: dict[str, Any] = {}
        if self.path.exists():
            document = json.loads(self.path.read_text())
            resources = [AppliedResource(**raw) for raw in document["resources"]]
            self._resources = {resource.urn: resource for resource in resources}
            self._next_sequence = int(document["next_sequence"])
            self.stack_outputs, self.swarm = document["stack_outputs"], document.get("swarm", {})

    def take_sequence(self) -> int:
        with self._lock:
            self._next_sequence += 1
            self._save_locked()
            return self._next_sequence - 1

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

    def save(self, **fields: dict[str, Any]) -> None:
        """Record `stack_outputs` or `swarm`."""
        with self._lock:
            for key, value in fields.items():
                setattr(self, key, dict(value))
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
            "swarm": self.swarm,
            "resources": [asdict(resource) for resource in self._resources.values()],
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
        os.replace(temporary, self.path)
