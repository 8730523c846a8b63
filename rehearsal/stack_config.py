"""A stack's configuration, read as the Pulumi CLI reads it and handed to the program as the engine
does.

Layers, later wins: the project's declared defaults (`Pulumi.yaml` `config:`),
`Pulumi.<stack>.yaml`, `rehearsal/stacks/Pulumi.rehearsal-<stack>.yaml` (the rehearsal's own stack
file: ports that do not collide, short schedules; a rehearsal-only stack such as `swarm` has this
file alone), then `--config key=value` as `pulumi config set` would. Values reach the program as
strings (objects and lists as JSON), keys namespaced by the project name.

Secrets: `pulumi config set --secret` values are encrypted with a passphrase the rehearsal does not
have, so every secret key (declared `secret: true` in `Pulumi.yaml`, or `secure:` in a stack file)
that the layers leave without a plain value is given a random value, generated once per machine and
kept in a 0600 file under `.pulumi-state/rehearsal/` (git-ignored), so a second `up` and data kept
across `down`/`up` see the same credentials. They are handed over as secret config, as the engine
does.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rehearsal.engine import STATE_DIR, RehearsalError
from rehearsal.runner import REPO_ROOT

# The rehearsal's own stack files (`Pulumi.rehearsal-<stack>.yaml`), layered over the project's.
OVERLAYS_DIR = Path(__file__).resolve().parent / "stacks"

# Per stack: the secret keys the rehearsal supplies when the layers leave them unset (what
# `pulumi config set --secret` holds on a real machine), and the shape of each generated value.
GENERATED_SECRETS: dict[str, dict[str, str]] = {
    # Flower's API answers only behind basic auth (or with FLOWER_UNAUTHENTICATED_API, which the
    # program does not set): the rehearsed dev stack gets credentials too.
    "dev": {"flowerBasicAuth": "rehearsal:{token}"},
    "prod": {
        "postgresPassword": "{token}",
        "redisPassword": "{token}",
        "flowerBasicAuth": "rehearsal:{token}",
    },
    # The swarm rehearsal runs the prod environment (Pulumi.rehearsal-swarm.yaml): every credential
    # becomes a Swarm secret.
    "swarm": {
        "postgresPassword": "{token}",
        "redisPassword": "{token}",
        "flowerBasicAuth": "rehearsal:{token}",
    },
    # The same on three nodes (Pulumi.rehearsal-swarm3.yaml, docs/swarm.md).
    "swarm3": {
        "postgresPassword": "{token}",
        "redisPassword": "{token}",
        "flowerBasicAuth": "rehearsal:{token}",
    },
}


@dataclass
class StackConfig:
    project: str
    program_dir: Path
    values: dict[str, str] = field(default_factory=dict)
    secret_keys: list[str] = field(default_factory=list)
    generated_secrets: list[str] = field(default_factory=list)


def _as_config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _namespaced(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def _read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise RehearsalError(f"{path}: not a mapping")
    return loaded


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
    project_file = repo / "Pulumi.yaml"
    if not project_file.exists():
        raise RehearsalError(f"{project_file} not found: the Pulumi project is not there yet")
    project_doc = _read_yaml(project_file)
    project = str(project_doc["name"])
    program_dir = (repo / str(project_doc.get("main") or ".")).resolve()

    values: dict[str, str] = {}
    secret_keys: set[str] = set()
    encrypted: set[str] = set()
    for key, declaration in (project_doc.get("config") or {}).items():
        full_key = _namespaced(project, str(key))
        if isinstance(declaration, dict) and ("type" in declaration or "default" in declaration):
            if declaration.get("secret"):
                secret_keys.add(full_key)
            if "default" in declaration:
                values[full_key] = _as_config_string(declaration["default"])
        else:
            values[full_key] = _as_config_string(declaration)

    stack_files = [repo / f"Pulumi.{stack}.yaml", overlays / f"Pulumi.rehearsal-{stack}.yaml"]
    # A stack the rehearsal alone runs (swarm) has only its rehearsal stack file.
    if not any(stack_file.exists() for stack_file in stack_files):
        raise RehearsalError(f"{stack_files[0]} not found: no such stack")
    for stack_file in stack_files:
        if not stack_file.exists():
            continue
        for key, value in (_read_yaml(stack_file).get("config") or {}).items():
            full_key = _namespaced(project, str(key))
            if isinstance(value, dict) and set(value) == {"secure"}:
                secret_keys.add(full_key)
                encrypted.add(full_key)
                values.pop(full_key, None)
            else:
                values[full_key] = _as_config_string(value)
                encrypted.discard(full_key)

    for flag, given, secret in (
        ("--config", overrides, False),
        ("--secret", secret_overrides, True),
    ):
        for override in given or []:
            key, separator, value = override.partition("=")
            if not separator:
                raise RehearsalError(f"{flag} {key!r}...: expected key=value")
            full_key = _namespaced(project, key)
            values[full_key] = value
            encrypted.discard(full_key)
            if secret:
                secret_keys.add(full_key)

    # Secrets a stack needs and the repository cannot hold: generated, as a CI job would inject
    # them.
    wanted = secret_keys | {_namespaced(project, key) for key in GENERATED_SECRETS.get(stack, {})}
    missing = sorted(key for key in wanted if key not in values)
    secret_keys |= set(missing)
    generated = _rehearsal_secrets(
        state_dir / f"{secrets_name or stack}.secrets.json",
        missing,
        GENERATED_SECRETS.get(stack, {}),
    )
    values.update(generated)
    return StackConfig(
        project=project,
        program_dir=program_dir,
        values=values,
        secret_keys=sorted(secret_keys),
        generated_secrets=sorted(generated),
    )


def _rehearsal_secrets(path: Path, keys: list[str], formats: dict[str, str]) -> dict[str, str]:
    """Throwaway credentials for the rehearsal, generated once, readable by the owner only."""
    if not keys:
        return {}
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for key in keys:
        if key not in stored:
            template = formats.get(key.partition(":")[2], "{token}")
            stored[key] = template.format(token=secrets.token_urlsafe(24))
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle, indent=2, sort_keys=True)
    return {key: stored[key] for key in keys}


def read_rehearsal_secrets(stack: str, *, state_dir: Path = STATE_DIR) -> dict[str, str]:
    """A stack's generated credentials (for tests that must authenticate), by full config key."""
    path = state_dir / f"{stack}.secrets.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}
