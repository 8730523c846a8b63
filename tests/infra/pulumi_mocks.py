"""Run the Pulumi program as the Pulumi CLI does, on a mock engine, recording what it registers.

`run_program` resets Pulumi's global runtime state, sets the stack configuration, installs a
recording monitor and runs `infra/` with `runpy.run_path`, from the `infra/` directory, inside
`run_in_stack`, as the Python language host does. The monitor keeps, per registration, the inputs as
sent (secret values still wrapped), the dependency URNs the engine would see and the resource
options; the stack outputs come from `RegisterResourceOutputs`. Subclass `ProgramMocks` (or pass any
`pulumi.runtime.Mocks`) to decide what each resource returns; the rehearsal applies registrations to
a real engine instead.
"""

from __future__ import annotations

import asyncio
import os
import runpy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
PROJECT = "taskstack"

SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key

CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/image:Image"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"  # noqa: S105 - a type token
# The suffix Pulumi's auto-naming would add (random per resource; fixed here so runs compare).
AUTONAME_SUFFIX = "-a1b2c3d"


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

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)  # type: ignore[no-any-return]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, keeping every registration with its dependencies and options."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.stack_outputs: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type == "pulumi:pulumi:Stack":
            return response
        self.registrations.append(
            Registration(
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
            )
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":
            self.stack_outputs = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


class ProgramMocks(pulumi_mocks.Mocks):
    """Answers like the docker provider after a successful create: inputs plus computed outputs.

    `migration_exit_code` and `migration_logs` are what the one-shot migrate container reports.
    """

    def __init__(self, migration_exit_code: int = 0, migration_logs: str = "") -> None:
        self.migration_exit_code = migration_exit_code
        self.migration_logs = migration_logs or (
            "INFO  [alembic.runtime.migration] Running upgrade  -> 0001, create jobs\n"
        )

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == SECRET and "name" not in state:
            state["name"] = f"{args.name}{AUTONAME_SUFFIX}"  # the provider auto-names secrets
        name = str(reveal(state.get("name", args.name)))
        if args.typ == CONTAINER:
            state |= {"exitCode": 0, "containerLogs": ""}
            if state.get("attach"):
                state |= {
                    "exitCode": self.migration_exit_code,
                    "containerLogs": self.migration_logs,
                }
        elif args.typ == IMAGE:
            state |= {
                "repoDigest": "sha256:" + "a" * 64,
                "baseImageName": state.get("imageName", ""),
            }
        elif args.typ == REMOTE_IMAGE:
            state |= {"imageId": f"sha256:{abs(hash(name)):064d}"[:71], "repoDigest": ""}
        return f"{name}-id", state

    def call(
        self, args: pulumi_mocks.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@dataclass
class ProgramRun:
    """Everything one run of the program registered."""

    registrations: list[Registration]
    stack_outputs: dict[str, Any]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def named(self, name: str, type_: str = CONTAINER) -> Registration:
        matches = [r for r in self.registrations if r.name == name and r.type == type_]
        assert len(matches) == 1, f"{len(matches)} {type_} registrations named {name!r}"
        return matches[0]

    def containers(self) -> Iterator[Registration]:
        return iter(self.of_type(CONTAINER))

    def role(self, role: str) -> list[Registration]:
        return [c for c in self.containers() if container_label(c, "com.taskstack.role") == role]


def container_label(registration: Registration, label: str) -> str | None:
    for item in registration.plain.get("labels", []):
        if item["label"] == label:
            return str(item["value"])
    return None


def container_env(registration: Registration) -> dict[str, str]:
    entries = registration.plain.get("envs", [])
    return dict(str(entry).split("=", 1) for entry in entries)


def _reset_runtime(mocks: pulumi_mocks.Mocks, monitor: RecordingMonitor, stack: str) -> None:
    # Pulumi keeps the root stack, the settings and the pending outputs in module-level state; a run
    # starts from none of them, as a fresh `pulumi up` process would.
    settings.ROOT.set(None)
    settings.SETTINGS.outputs.clear()
    pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    settings.ROOT.set(None)  # set_mocks created a root stack; run_in_stack makes its own


def run_program(
    config: Mapping[str, Any],
    *,
    stack: str,
    secrets: Mapping[str, str] | None = None,
    mocks: pulumi_mocks.Mocks | None = None,
) -> ProgramRun:
    """Run `infra/` for `stack` with `config` and `secrets` (keys without `taskstack:`).

    Raises what the program raises (a configuration error, a failed migration gate).
    """
    # Each run gets its own event loop, as each `pulumi up` is its own process; other test modules
    # (the app's async tests) may have closed or unset the thread's loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = mocks or ProgramMocks()
    monitor = RecordingMonitor(mocks)
    all_config = {f"{PROJECT}:{k}": str(v) for k, v in config.items()}
    all_config |= {f"{PROJECT}:{k}": v for k, v in (secrets or {}).items()}
    pulumi.runtime.set_all_config(
        all_config, secret_keys=[f"{PROJECT}:{k}" for k in (secrets or {})]
    )
    _reset_runtime(mocks, monitor, stack)
    previous_cwd = Path.cwd()
    os.chdir(INFRA_DIR)  # Pulumi runs the program from `main`
    try:
        _sync_await(run_in_stack(lambda: _run_main()))
    finally:
        os.chdir(previous_cwd)
        _drain_event_loop()
    return ProgramRun(monitor.registrations, monitor.stack_outputs)


def _run_main() -> None:
    runpy.run_path(str(INFRA_DIR), run_name="__main__")


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
