"""Run a Pulumi program as the Pulumi CLI does, on a mock engine, recording what it registers.

One runner for the rehearsal (`EngineMocks`, which applies each registration to Docker) and for the
mocks unit tests (`tests/infra`, whose mocks answer like the provider without doing anything).

`run_program` resets Pulumi's global runtime state, sets the stack configuration, installs a
`RecordingMonitor` and runs the program directory (`infra/` by default) with `runpy.run_path`, from
that directory, inside `run_in_stack`, as the Python language host does. The monitor keeps, per
registration, the inputs as sent (secret values still wrapped), the dependency URNs the engine would
see and the resource options; the stack outputs come from `RegisterResourceOutputs`. While a
registration is being answered, `current_registration()` gives the mocks its URN and options, which
`MockResourceArgs` does not carry.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from rehearsal.project import REPO_ROOT as REPO_ROOT
from rehearsal.project import read_project
from rehearsal.tokens import CONTAINER

SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def reveal(value: Any) -> Any:
    """The value with every secret wrapper removed (what a provider would receive)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def without_secrets(value: Any) -> Any:
    """The value with every secret-marked part replaced by a placeholder."""
    if is_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


@dataclass
class Registration:
    """One RegisterResource call as the engine received it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]  # wire names, secrets still wrapped
    dependencies: frozenset[str]
    property_dependencies: Mapping[str, frozenset[str]]
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    replace_on_changes: tuple[str, ...]
    outputs: dict[str, Any] = field(default_factory=dict)
    ignore_changes: tuple[str, ...] = ()
    id: str = ""  # the provider's id (custom resources)
    # Whether the program set delete_before_replace at all (unset: the provider's choice stands).
    delete_before_replace_defined: bool = False

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)  # type: ignore[no-any-return]


@dataclass
class RegistrationOptions:
    """What the monitor receives with a registration but `MockResourceArgs` does not carry."""

    urn: str
    dependencies: list[str] = field(default_factory=list)
    protect: bool = False
    retain_on_delete: bool = False
    # The program's delete_before_replace; None when unset (the provider's own choice then).
    delete_before_replace: bool | None = None


_current = threading.local()


def current_registration(args: pulumi_mocks.MockResourceArgs) -> RegistrationOptions:
    """The URN and options of the registration `new_resource` is answering (the SDK calls the
    monitor, and the monitor the mocks, synchronously on one thread)."""
    options = getattr(_current, "options", None)
    if isinstance(options, RegistrationOptions):
        return options
    return RegistrationOptions(urn=f"{args.typ}::{args.name}")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, keeping every registration with its dependencies and options, and
    handing the URN and options to the mocks while they answer."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.stack_outputs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:
        _current.options = RegistrationOptions(
            urn=self.make_urn(request.parent, request.type, request.name),
            dependencies=list(request.dependencies),
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            delete_before_replace=bool(request.deleteBeforeReplace)
            if request.deleteBeforeReplaceDefined
            else None,
        )
        try:
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        finally:
            _current.options = None
        if request.type == "pulumi:pulumi:Stack":
            return response
        registration = Registration(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent,
            custom=bool(request.custom),
            inputs=rpc.deserialize_properties(request.object),
            dependencies=frozenset(request.dependencies),
            property_dependencies={
                key: frozenset(deps.urns) for key, deps in request.propertyDependencies.items()
            },
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            delete_before_replace=bool(request.deleteBeforeReplace),
            replace_on_changes=tuple(request.replaceOnChanges),
            outputs=rpc.deserialize_properties(response.object),
            ignore_changes=tuple(request.ignoreChanges),
            id=response.id,
            delete_before_replace_defined=bool(request.deleteBeforeReplaceDefined),
        )
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
        return {key: _whole_numbers(reveal(value)) for key, value in self.stack_outputs.items()}

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


def _whole_numbers(value: Any) -> Any:
    # Numbers cross the RPC boundary as doubles.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


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
    """Run `program_dir` for `stack` with `config` (full keys, `<project>:<key>`, string values;
    `secret_keys` among them are secret) under `mocks`. The project and its program directory are
    `Pulumi.yaml`'s unless given.

    Raises what the program raises (a configuration error, a failed migration gate) and what the
    mocks raise (a registration the rehearsal could not apply).
    """
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
    previous_cwd = Path.cwd()
    previous_path = list(sys.path)
    os.chdir(program_dir)  # Pulumi runs the program from `main`
    try:
        _sync_await(run_in_stack(lambda: _run_main(program_dir)))
    finally:
        os.chdir(previous_cwd)
        sys.path[:] = previous_path
        _drain_event_loop()
    return ProgramRun(monitor.registrations, monitor.stack_outputs, project)


def _run_main(program_dir: Path) -> None:
    runpy.run_path(str(program_dir), run_name="__main__")


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
