"""A stack's configuration, read as the Pulumi CLI reads it and handed to the program as the engine
does.

Layers, later wins: the keys `Pulumi.yaml` declares with a default, `Pulumi.<stack>.yaml`,
`rehearsal/stacks/Pulumi.rehearsal-<stack>.yaml` (the rehearsal's own stack file: ports that do not
collide, short schedules; a rehearsal-only stack such as `swarm` has this file alone), then
`--config key=value` / `--secret key=value` as `pulumi config set [--secret]` would. A key without a
namespace is the project's, as in `Pulumi.yaml`. Values reach the program as strings (objects and
lists as JSON).

Secrets: a key declared `secret: true` in `Pulumi.yaml`, set with `secure:` in a stack file
(encrypted with a passphrase the rehearsal does not have), or set to `{generated: <shape>}` in the
rehearsal's stack file, and left without a plain value, is given a random value of its shape
(`{token}` in it stands for 32 random URL-safe characters; a key with no shape is `{token}`).
The value is generated once per machine and kept in a 0600 file under `.pulumi-state/rehearsal/`
(git-ignored), so a second `up` and data kept across `down`/`up` see the same credentials. Every
secret key is handed over as secret config, as the engine does.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from rehearsal.engine import STATE_DIR, RehearsalError
from rehearsal.project import REPO_ROOT, Project, config_string, read_project, read_yaml

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
    generated_secrets: list[str] = field(default_factory=list)

    def node_labels(self) -> dict[str, str]:
        """The node labels the stack pins services to, which the rehearsal puts on the swarm's
        nodes as an operator would: the `key=value` items of each project key whose name ends in
        `NodeLabels` (a JSON array). A value the program would reject is skipped here: the program
        reports it, naming the key."""
        labels: dict[str, str] = {}
        for key, raw in self.values.items():
            if not (key.startswith(f"{self.project}:") and key.endswith(NODE_LABELS_SUFFIX)):
                continue
            try:
                items = json.loads(raw)
            except json.JSONDecodeError:
                continue
            for item in items if isinstance(items, list) else []:
                name, separator, value = str(item).partition("=")
                if separator and name:
                    labels[name] = value
        return labels


@dataclass
class _Layers:
    """The configuration being read, layer by layer."""

    project: Project
    values: dict[str, str]
    secret_keys: set[str]
    # Full key -> the shape of its generated value, when it has no plain one.
    shapes: dict[str, str] = field(default_factory=dict)

    def read_stack_file(self, path: Path) -> None:
        for key, value in (read_yaml(path).get("config") or {}).items():
            full_key = self.project.key(str(key))
            if isinstance(value, dict) and set(value) in ({"secure"}, {"generated"}):
                self.secret_keys.add(full_key)
                self.values.pop(full_key, None)
                self.shapes[full_key] = str(value.get("generated") or TOKEN)
            else:
                self.values[full_key] = config_string(value)

    def read_overrides(self, flag: str, overrides: list[str], *, secret: bool) -> None:
        for override in overrides:
            key, separator, value = override.partition("=")
            if not separator:
                raise RehearsalError(f"{flag} {key!r}...: expected key=value")
            full_key = self.project.key(key)
            self.values[full_key] = value
            if secret:
                self.secret_keys.add(full_key)


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
    layers = _Layers(project, dict(project.defaults), set(project.secret_keys))
    stack_files = [repo / f"Pulumi.{stack}.yaml", overlays / f"Pulumi.rehearsal-{stack}.yaml"]
    # A stack the rehearsal alone runs (swarm) has only its rehearsal stack file.
    if not any(stack_file.exists() for stack_file in stack_files):
        raise RehearsalError(f"{stack_files[0]} not found: no such stack")
    for stack_file in stack_files:
        if stack_file.exists():
            layers.read_stack_file(stack_file)
    layers.read_overrides("--config", overrides or [], secret=False)
    layers.read_overrides("--secret", secret_overrides or [], secret=True)
    # Secrets a stack needs and the repository cannot hold: generated, as a CI job would inject
    # them.
    missing = {key: layers.shapes.get(key, TOKEN) for key in layers.secret_keys}
    missing = {key: shape for key, shape in missing.items() if key not in layers.values}
    generated = _rehearsal_secrets(state_dir / f"{secrets_name or stack}.secrets.json", missing)
    return StackConfig(
        project=project.name,
        program_dir=project.program_dir,
        values={**layers.values, **generated},
        secret_keys=sorted(layers.secret_keys),
        generated_secrets=sorted(generated),
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
