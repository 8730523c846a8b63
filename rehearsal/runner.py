"""Run a Pulumi program as the Pulumi CLI does, on a mock engine, recording what it registers.

`read_project` reads `Pulumi.yaml`: the project's name (its keys' namespace), program directory
and declared keys. `run_program` resets Pulumi's runtime state, sets the configuration and runs the
program directory with `runpy` inside `run_in_stack`, as the Python language host does, under a
`RecordingMonitor` that keeps each registration (inputs, dependencies, options) and hands it to the
mocks: the rehearsal's `EngineMocks` apply it to Docker, `tests/infra`'s answer like the provider.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from rehearsal.tokens import CONTAINER

# The project the rehearsal runs: the Pulumi.yaml above this package (it knows no other).
REPO_ROOT = Path(__file__).resolve().parents[1]


def read_yaml(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()) or {})


def config_string(value: Any) -> str:
    """A configuration value as the engine hands it to the program: JSON for objects, lists and
    booleans, else as written."""
    return json.dumps(value) if isinstance(value, bool | dict | list) else str(value)


@dataclass(frozen=True)
class Project:
    name: str
    program_dir: Path
    defaults: dict[str, str]  # full key (`<name>:<key>`) -> its declared default
    secret_keys: frozenset[str]

    def key(self, key: str) -> str:
        """`key` namespaced as the Pulumi CLI does: a key without a namespace is the project's."""
        return key if ":" in key else f"{self.name}:{key}"


def read_project(root: Path = REPO_ROOT) -> Project:
    document = read_yaml(root / "Pulumi.yaml")
    name = str(document["name"])
    declared = {
        key if ":" in key else f"{name}:{key}": entry
        if isinstance(entry, dict)
        else {"default": entry}
        for key, entry in (document.get("config") or {}).items()
    }
    defaults = {key: config_string(d["default"]) for key, d in declared.items() if "default" in d}
    secret_keys = frozenset(key for key, entry in declared.items() if entry.get("secret"))
    program_dir = (root / str(document.get("main") or ".")).resolve()
    return Project(name, program_dir, defaults, secret_keys)


SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def _transform(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """`value` with `leaf` applied to each secret and each scalar, through dicts and lists."""
    if isinstance(value, dict) and not is_secret(value):
        return {k: _transform(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_transform(v, leaf) for v in value]
    return leaf(value)


def reveal(value: Any) -> Any:
    """The value with every secret wrapper removed (what a provider would receive)."""
    return _transform(value, lambda v: reveal(v["value"]) if is_secret(v) else v)


def without_secrets(value: Any) -> Any:
    """The value with every secret-marked part replaced by a placeholder."""
    return _transform(value, lambda v: "[secret]" if is_secret(v) else v)


@dataclass
class Registration:
    """One RegisterResource call as the engine received it."""

    type: str
    name: str
    urn: str
    parent: str = ""
    custom: bool = True
    inputs: dict[str, Any] = field(default_factory=dict)  # wire names, secrets still wrapped
    dependencies: frozenset[str] = frozenset()
    property_dependencies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    replace_on_changes: tuple[str, ...] = ()
    outputs: dict[str, Any] = field(default_factory=dict)
    ignore_changes: tuple[str, ...] = ()
    id: str = ""  # the provider's id (custom resources)
    # Whether the program set delete_before_replace at all (unset: the provider's choice stands).
    delete_before_replace_defined: bool = False

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)  # type: ignore[no-any-return]

    @property
    def delete_first(self) -> bool | None:
        """The program's delete_before_replace; None when unset (the provider's choice then)."""
        return self.delete_before_replace if self.delete_before_replace_defined else None


_current = threading.local()


def current_registration(args: pulumi_mocks.MockResourceArgs) -> Registration:
    """The registration `new_resource` is answering (the monitor calls the mocks on its thread),
    with the URN and options `MockResourceArgs` lacks; a read (StackReference) has none."""
    registration = getattr(_current, "registration", None)
    if not isinstance(registration, Registration):
        registration = Registration(args.typ, args.name, urn=f"{args.typ}::{args.name}")
    registration.inputs = args.inputs
    return registration


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, keeping every registration with its dependencies and options, and
    handing it to the mocks while they answer."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.stack_outputs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:
        dependencies = request.propertyDependencies.items()
        registration = Registration(
            type=request.type,
            name=request.name,
            urn=self.make_urn(request.parent, request.type, request.name),
            parent=request.parent,
            custom=bool(request.custom),
            dependencies=frozenset(request.dependencies),
            property_dependencies={key: frozenset(deps.urns) for key, deps in dependencies},
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            delete_before_replace=bool(request.deleteBeforeReplace),
            replace_on_changes=tuple(request.replaceOnChanges),
            ignore_changes=tuple(request.ignoreChanges),
            delete_before_replace_defined=bool(request.deleteBeforeReplaceDefined),
        )
        _current.registration = registration
        try:
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        finally:
            _current.registration = None
        if request.type != "pulumi:pulumi:Stack":
            registration.urn, registration.id = response.urn, response.id
            # Deserialized once the SDK's monitor has made sure this thread has an event loop.
            registration.inputs = rpc.deserialize_properties(request.object)
            registration.outputs = rpc.deserialize_properties(response.object)
            with self._lock:  # the SDK registers independent resources from several threads
                self.registrations.append(registration)
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":
            self.stack_outputs = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


@dataclass
class ProgramRun:
    """Everything one run of the program registered, and its stack outputs."""

    registrations: list[Registration]
    stack_outputs: dict[str, Any]  # secrets still wrapped
    project: str = ""

    @property
    def exports(self) -> dict[str, Any]:
        """The stack outputs as plain values, as `pulumi stack output --json --show-secrets`
        prints them (a whole number is an integer, as in the CLI's JSON)."""

        # Numbers cross the RPC boundary as doubles.
        def whole(value: Any) -> Any:
            return int(value) if isinstance(value, float) and value.is_integer() else value

        return {key: _transform(reveal(value), whole) for key, value in self.stack_outputs.items()}

    @property
    def secret_outputs(self) -> set[str]:
        return {key for key, value in self.stack_outputs.items() if is_secret(value)}

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def named(self, name: str, type_: str = CONTAINER) -> Registration:
        matches = [r for r in self.registrations if r.name == name and r.type == type_]
        assert len(matches) == 1, f"{len(matches)} {type_} registrations named {name!r}"
        return matches[0]

    def containers(self) -> Iterator[Registration]:
        return iter(self.of_type(CONTAINER))

    def role(self, role: str, label: str | None = None) -> list[Registration]:
        """The containers whose `label` is `role`; by default the label `com.<project>.role`."""
        label = label or f"com.{self.project}.role"
        return [c for c in self.containers() if container_label(c, label) == role]


def container_label(registration: Registration, label: str) -> str | None:
    for item in registration.plain.get("labels", []):
        if item["label"] == label:
            return str(item["value"])
    return None


def container_env(registration: Registration) -> dict[str, str]:
    entries = registration.plain.get("envs", [])
    return dict(str(entry).split("=", 1) for entry in entries)


def run_program(
    config: Mapping[str, str],
    *,
    stack: str,
    mocks: pulumi_mocks.Mocks,
    secret_keys: Collection[str] = (),
    project: str | None = None,
    program_dir: Path | None = None,
) -> ProgramRun:
    """Run `program_dir` (default: `Pulumi.yaml`'s) for `stack` with `config` (full keys, string
    values; `secret_keys` among them secret) under `mocks`. Raises what the program raises (a
    configuration error, a failed migration gate) and what the mocks raise."""
    if project is None or program_dir is None:
        declared = read_project()
        project, program_dir = project or declared.name, program_dir or declared.program_dir
    # Each run gets its own event loop, as each `pulumi up` is its own process; other test modules
    # (the app's async tests) may have closed or unset the thread's loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    monitor = RecordingMonitor(mocks)
    # Pulumi keeps the root stack, the settings and the pending outputs in module-level state; a run
    # starts from none of them, as a fresh `pulumi up` process would. The language host passes the
    # project root (where Pulumi.yaml is) to the program.
    settings.reset_options(
        project=project, stack=stack, root_directory=str(REPO_ROOT), preview=False
    )
    settings.SETTINGS.outputs.clear()
    pulumi.runtime.set_all_config(dict(config), secret_keys=list(secret_keys))
    pulumi_mocks.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    settings.ROOT.set(None)  # set_mocks created a root stack; run_in_stack makes its own
    settings.SETTINGS.root_directory = str(REPO_ROOT)
    previous_cwd, previous_path, main = Path.cwd(), list(sys.path), str(program_dir)
    os.chdir(program_dir)  # Pulumi runs the program from `main`
    try:
        _sync_await(run_in_stack(lambda: _run_main(main)))
    finally:
        os.chdir(previous_cwd)
        sys.path[:] = previous_path
        _drain_event_loop()
    return ProgramRun(monitor.registrations, monitor.stack_outputs, project)


def _run_main(program_dir: str) -> None:
    runpy.run_path(program_dir, run_name="__main__")


def _drain_event_loop() -> None:
    # A failed run leaves tasks (outputs that will never resolve) behind; cancel them so that the
    # next run starts with an empty loop.
    loop = asyncio.get_event_loop()
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    settings.SETTINGS.outputs.clear()
    loop.close()
    asyncio.set_event_loop(None)
