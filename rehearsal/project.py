"""The Pulumi project the rehearsal runs, as `Pulumi.yaml` declares it (the rehearsal knows no
other).

`REPO_ROOT` is the directory above this package, where `Pulumi.yaml` is. From it come the project's
name (the namespace of its configuration keys), its program directory (`main`) and its declared
keys: their defaults, and which are secret (`secret: true`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a mapping")
    return loaded


def config_string(value: Any) -> str:
    """A configuration value as the engine hands it to the program: a string, JSON for objects
    and lists, `true`/`false` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class Project:
    name: str
    program_dir: Path
    # Full key (`<name>:<key>`) -> the declared default, as a configuration string.
    defaults: dict[str, str]
    secret_keys: frozenset[str]

    def key(self, key: str) -> str:
        """`key` namespaced as the Pulumi CLI does: a key without a namespace is the project's."""
        return key if ":" in key else f"{self.name}:{key}"


def read_project(root: Path = REPO_ROOT) -> Project:
    document = read_yaml(root / "Pulumi.yaml")
    name = str(document["name"])
    defaults: dict[str, str] = {}
    secret_keys: set[str] = set()
    for key, declared in (document.get("config") or {}).items():
        full_key = key if ":" in key else f"{name}:{key}"
        if not isinstance(declared, dict):  # a value, not a declaration
            defaults[full_key] = config_string(declared)
            continue
        if declared.get("secret"):
            secret_keys.add(full_key)
        if "default" in declared:
            defaults[full_key] = config_string(declared["default"])
    program_dir = (root / str(document.get("main") or ".")).resolve()
    return Project(name, program_dir, defaults, frozenset(secret_keys))
