"""Pulumi's Automation API as a deployer: a `LocalWorkspace` on this project (the repository's
root, where Pulumi.yaml is), the stack NAME, the passphrase secrets provider and, unless
PULUMI_BACKEND_URL says otherwise, the local file backend under .pulumi-state/, as
make up sets them. Needs the Pulumi CLI and PULUMI_CONFIG_PASSPHRASE (or _FILE).

Each `up` sets the stack's whole configuration first: what the rehearsal hands the program for
the same stack (`rehearsal.stack_config`: Pulumi.yaml's defaults, Pulumi.<stack>.yaml,
rehearsal/stacks/Pulumi.rehearsal-<stack>.yaml, then this `up`'s keys, the generated credentials
as secrets), so both deployers deploy the same stack. docs/rehearsal.md, "The deployers"."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import docker.errors
from pulumi import automation as auto

from deploy.base import REPO_ROOT, Deployed, Deployer, DeployError
from infra.spec import LABEL_STACK
from rehearsal.stack_config import load_stack_config

LOCAL_BACKEND = REPO_ROOT / ".pulumi-state"
VOLUME_TYPE = "docker:index/volume:Volume"
# The engine's step operations, as the rehearsal names them; the others ("same", "read",
# "refresh", ...) change nothing.
REPORTED_OPS = {
    "create": "create",
    "update": "update",
    "delete": "delete",
    "replace": "replace",
    "create-replacement": "replace",
    "delete-replaced": "replace",
}


class AutomationDeployer(Deployer):
    def environment(self) -> dict[str, str]:
        """What every `pulumi` command gets on top of this process's environment."""
        if not (
            os.environ.get("PULUMI_CONFIG_PASSPHRASE")
            or os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
        ):
            raise DeployError(
                "Set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts the "
                "stack's secrets (the passphrase secrets provider, as `make up` uses)"
            )
        backend = os.environ.get("PULUMI_BACKEND_URL")
        if not backend:
            LOCAL_BACKEND.mkdir(exist_ok=True)
            backend = f"file://{LOCAL_BACKEND}"
        return {"PULUMI_BACKEND_URL": backend}

    @cached_property
    def pulumi_stack(self) -> auto.Stack:
        """`pulumi stack select --create NAME --secrets-provider passphrase` in the project."""
        options = auto.LocalWorkspaceOptions(
            secrets_provider="passphrase", env_vars=self.environment()
        )
        return auto.create_or_select_stack(
            stack_name=self.name, work_dir=str(REPO_ROOT), opts=options
        )

    def up(
        self,
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> Deployed:
        steps = Steps()
        try:
            self.configure(config or {}, secrets or {})
            result = self.pulumi_stack.up(
                color="never", on_event=steps.record, on_output=self._on_output
            )
        except auto.CommandError as error:
            return self._failed("up", str(error), check=check)
        return Deployed(ok=True, changes=steps.changes, log=result.stdout + result.stderr)

    def configure(self, config: Mapping[str, str], secrets: Mapping[str, str]) -> None:
        """The stack's configuration replaced by the rehearsal's for the same stack and keys."""
        loaded = load_stack_config(
            self.stack,
            [f"{key}={value}" for key, value in config.items()],
            secret_overrides=[f"{key}={value}" for key, value in secrets.items()],
            secrets_name=self.name,
        )
        plain, paths = config_values(loaded.values, set(loaded.secret_keys))
        stack = self.pulumi_stack
        # Keys an earlier `up` was given and this one is not: gone, as they are for the rehearsal.
        if existing := list(stack.get_all_config()):
            stack.remove_all_config(existing)
        stack.set_all_config(plain)
        if paths:
            stack.set_all_config(paths, path=True)

    def down(self, *, volumes: bool = False, check: bool = True) -> None:
        """`pulumi destroy`. Without `volumes`, only what is not a volume (nor a volume's parent)
        is destroyed, so the data stays in the state and on the engine. With `volumes`, the whole
        stack, then the volumes the engine kept (prod's retain_on_delete, swarm tasks' volumes),
        then the stack itself (`pulumi stack rm`: its state and Pulumi.NAME.yaml)."""
        stack = self.pulumi_stack
        try:
            if volumes:
                stack.destroy(color="never", on_output=self._on_output)
            elif targets := without_volumes(stack.export_stack().deployment or {}):
                stack.destroy(
                    color="never",
                    on_output=self._on_output,
                    target=targets,
                    target_dependents=True,
                )
        except auto.CommandError as error:
            self._failed("destroy", str(error), check=check)
            return
        if not volumes:
            return
        try:
            for volume in self.engine.volumes.list(filters={"label": f"{LABEL_STACK}={self.name}"}):
                volume.remove()
        except docker.errors.APIError as error:
            self._failed("destroy", f"\n{error}", check=check)
            return
        stack.workspace.remove_stack(self.name)
        del self.pulumi_stack  # the next `up` creates it again

    def outputs(self) -> dict[str, Any]:
        return {
            key: output.value
            for key, output in self.pulumi_stack.outputs().items()
            if not output.secret
        }

    @property
    def _on_output(self) -> Callable[[str], None] | None:
        return (lambda line: print(line, file=sys.stderr, flush=True)) if self.echo else None

    def _failed(self, command: str, log: str, *, check: bool) -> Deployed:
        if check:
            raise DeployError(f"pulumi {command} {self.name} failed:{log[-12000:]}")
        return Deployed(ok=False, log=log)


def config_values(
    values: Mapping[str, str], secret_keys: set[str]
) -> tuple[dict[str, auto.ConfigValue], dict[str, auto.ConfigValue]]:
    """The configuration as `pulumi config set-all` takes it: plain keys, and each array (handed
    to the program as JSON, as a stack file's YAML list is) element by element under `--path`
    (`taskstack:appEnv[0]`), so that the stack file holds a list."""
    plain: dict[str, auto.ConfigValue] = {}
    paths: dict[str, auto.ConfigValue] = {}
    for key, value in values.items():
        secret = key in secret_keys
        items = _json_list(value)
        if items is None:
            plain[key] = auto.ConfigValue(value, secret=secret)
            continue
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else json.dumps(item)
            paths[f"{key}[{index}]"] = auto.ConfigValue(text, secret=secret)
    return plain, paths


def _json_list(value: str) -> list[Any] | None:
    if not value.startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and parsed else None


def without_volumes(deployment: Mapping[str, Any]) -> list[str]:
    """The URNs `down` without `volumes` destroys: every resource but the volumes, their parents
    (a component's children go with it), the providers and the stack itself."""
    resources = list(deployment.get("resources") or [])
    parents = {r["urn"]: r.get("parent") for r in resources}
    kept: set[str] = set()
    for resource in resources:
        if resource["type"] == VOLUME_TYPE:
            urn: str | None = resource["urn"]
            while urn and urn not in kept:
                kept.add(urn)
                urn = parents.get(urn)
    return [
        r["urn"]
        for r in resources
        if r["urn"] not in kept
        and r["type"] != "pulumi:pulumi:Stack"
        and not r["type"].startswith("pulumi:providers:")
    ]


class Steps:
    """The steps an `up` took, from the engine's events, in the rehearsal's words."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}

    @property
    def changes(self) -> list[str]:
        return list(self._seen.values())

    def record(self, event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is None or pre.planning:
            return
        step = pre.metadata
        op = REPORTED_OPS.get(str(getattr(step.op, "value", step.op)))
        if op is None or (op, step.urn) in self._seen:
            return
        diffs = f" ({', '.join(step.diffs)})" if step.diffs else ""
        self._seen[(op, step.urn)] = f"{op} {step.urn}{diffs}"
