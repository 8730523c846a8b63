"""A stack's configuration, read as the Pulumi CLI reads it and handed to the program as the engine
does (docs/rehearsal.md, "Stack configuration"): `Pulumi.yaml`'s defaults, `Pulumi.<stack>.yaml`,
the rehearsal's `stacks/Pulumi.rehearsal-<stack>.yaml`, then `--config`/`--secret`, later wins. A
secret key without a plain value gets a random value of its shape, generated once and kept in a
0600 file under `.pulumi-state/rehearsal/`, so the credentials stay the same across `up`s.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from rehearsal.engine import STATE_DIR, RehearsalError
from rehearsal.runner import REPO_ROOT, config_string, read_project, read_yaml

# The rehearsal's own stack files (`Pulumi.rehearsal-<stack>.yaml`), layered over the project's.
OVERLAYS_DIR = Path(__file__).resolve().parent / "stacks"
TOKEN = "{token}"  # noqa: S105 - where a generated secret's random part goes
# A key's node labels: what a swarm stack pins services to (see `StackConfig.node_labels`).
NODE_LABELS_SUFFIX = "NodeLabels"


@dataclass
class StackConfig:
    project: str
    program_dir: Path
    values: dict[str, str] = field(default_factory=dict)
    secret_keys: list[str] = field(default_factory=list)

    def node_labels(self) -> dict[str, str]:
        """The node labels the stack pins services to: the `key=value` items of each project key
        ending in `NodeLabels` (a JSON array; one the program rejects is skipped here)."""
        labels: dict[str, str] = {}
        for key, raw in self.values.items():
            if key.startswith(f"{self.project}:") and key.endswith(NODE_LABELS_SUFFIX):
                with contextlib.suppress(ValueError, TypeError):
                    labels |= dict(str(item).split("=", 1) for item in json.loads(raw))
        return labels


def _pairs(flag: str, given: list[str] | None) -> dict[str, str]:
    if bad := [item for item in given or [] if "=" not in item]:
        raise RehearsalError(f"{flag} {bad[0]!r}: expected key=value")
    return dict(item.partition("=")[::2] for item in given or [])


def load_stack_config(
    stack: str,
    overrides: list[str] | None = None,
    *,
    repo: Path = REPO_ROOT,
    overlays: Path = OVERLAYS_DIR,
    state_dir: Path = STATE_DIR,
    secret_overrides: list[str] | None = None,
    secrets_name: str | None = None,
) -> StackConfig:
    project = read_project(repo)
    values, secret_keys = dict(project.defaults), set(project.secret_keys)
    shapes: dict[str, str] = {}  # secret key -> the shape of its generated value
    stack_files = [repo / f"Pulumi.{stack}.yaml", overlays / f"Pulumi.rehearsal-{stack}.yaml"]
    # A stack the rehearsal alone runs (swarm) has only its rehearsal stack file.
    if not any(stack_file.exists() for stack_file in stack_files):
        raise RehearsalError(f"{stack_files[0]} not found: no such stack")
    layers = [read_yaml(path).get("config") or {} for path in stack_files if path.exists()]
    secret_layer = _pairs("--secret", secret_overrides)
    for layer in [*layers, _pairs("--config", overrides), secret_layer]:
        for key, value in layer.items():
            full_key = project.key(str(key))
            if isinstance(value, dict) and set(value) in ({"secure"}, {"generated"}):
                secret_keys.add(full_key)
                values.pop(full_key, None)
                shapes[full_key] = str(value.get("generated") or TOKEN)
            else:
                values[full_key] = config_string(value)
    secret_keys |= {project.key(key) for key in secret_layer}
    # Secrets a stack needs and the repository cannot hold: generated, as a CI job would inject
    # them.
    missing = {key: shapes.get(key, TOKEN) for key in secret_keys if key not in values}
    generated = _rehearsal_secrets(state_dir / f"{secrets_name or stack}.secrets.json", missing)
    return StackConfig(
        project=project.name,
        program_dir=project.program_dir,
        values={**values, **generated},
        secret_keys=sorted(secret_keys),
    )


def _rehearsal_secrets(path: Path, shapes: dict[str, str]) -> dict[str, str]:
    """Throwaway credentials for the rehearsal, generated once, readable by the owner only."""
    if not shapes:
        return {}
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    new = {
        key: shape.replace(TOKEN, secrets.token_urlsafe(24))
        for key, shape in shapes.items()
        if key not in stored
    }
    if new:
        stored |= new
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle, indent=2, sort_keys=True)
    return {key: stored[key] for key in shapes}


def read_rehearsal_secrets(stack: str, *, state_dir: Path = STATE_DIR) -> dict[str, str]:
    """A stack's generated credentials (for tests that must authenticate), by full config key."""
    path = state_dir / f"{stack}.secrets.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}
